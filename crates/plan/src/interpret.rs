//! Evaluates a [`RelExpr`] from scratch over given contents of the catalog items it reads.
