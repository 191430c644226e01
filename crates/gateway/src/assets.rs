//! Web assets (replaced by the embedded build on the web branch).

pub struct Asset {
    pub bytes: &'static [u8],
    pub content_type: &'static str,
}

pub fn asset(_path: &str) -> Option<Asset> {
    None
}
