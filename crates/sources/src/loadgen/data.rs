//! Fixed tables the generator draws from: wikis and their traffic share, name parts, comments.
//! Every name here is synthetic.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WikiKind {
    Wikidata,
    Commons,
    Wikipedia,
    Wiktionary,
    Other,
}

/// `(wiki id, server name, kind, share of all events in percent)`.
pub(crate) const WIKIS: &[(&str, &str, WikiKind, f64)] = &[
    ("wikidatawiki", "www.wikidata.org", WikiKind::Wikidata, 34.0),
    ("commonswiki", "commons.wikimedia.org", WikiKind::Commons, 22.0),
    ("enwiki", "en.wikipedia.org", WikiKind::Wikipedia, 11.0),
    ("dewiki", "de.wikipedia.org", WikiKind::Wikipedia, 3.5),
    ("frwiki", "fr.wikipedia.org", WikiKind::Wikipedia, 3.2),
    ("eswiki", "es.wikipedia.org", WikiKind::Wikipedia, 2.4),
    ("ruwiki", "ru.wikipedia.org", WikiKind::Wikipedia, 2.2),
    ("jawiki", "ja.wikipedia.org", WikiKind::Wikipedia, 1.8),
    ("itwiki", "it.wikipedia.org", WikiKind::Wikipedia, 1.7),
    ("zhwiki", "zh.wikipedia.org", WikiKind::Wikipedia, 1.6),
    ("enwiktionary", "en.wiktionary.org", WikiKind::Wiktionary, 1.6),
    ("ukwiki", "uk.wikipedia.org", WikiKind::Wikipedia, 1.3),
    ("plwiki", "pl.wikipedia.org", WikiKind::Wikipedia, 1.1),
    ("ptwiki", "pt.wikipedia.org", WikiKind::Wikipedia, 1.1),
    ("nlwiki", "nl.wikipedia.org", WikiKind::Wikipedia, 0.9),
    ("arwiki", "ar.wikipedia.org", WikiKind::Wikipedia, 0.9),
    ("fawiki", "fa.wikipedia.org", WikiKind::Wikipedia, 0.8),
    ("metawiki", "meta.wikimedia.org", WikiKind::Other, 0.8),
    ("frwiktionary", "fr.wiktionary.org", WikiKind::Wiktionary, 0.7),
    ("svwiki", "sv.wikipedia.org", WikiKind::Wikipedia, 0.6),
    ("viwiki", "vi.wikipedia.org", WikiKind::Wikipedia, 0.6),
    ("kowiki", "ko.wikipedia.org", WikiKind::Wikipedia, 0.6),
    ("hewiki", "he.wikipedia.org", WikiKind::Wikipedia, 0.5),
    ("idwiki", "id.wikipedia.org", WikiKind::Wikipedia, 0.5),
    ("trwiki", "tr.wikipedia.org", WikiKind::Wikipedia, 0.5),
    ("enwikisource", "en.wikisource.org", WikiKind::Other, 0.3),
    ("specieswiki", "species.wikimedia.org", WikiKind::Other, 0.3),
    ("mediawikiwiki", "www.mediawiki.org", WikiKind::Other, 0.2),
];

/// The most active accounts, most active first: `(name, is bot, home wiki index)`. Their ranks are
/// the head of the editor Zipf distribution, so these few make a large share of all events.
pub(crate) const TOP_USERS: &[(&str, bool, usize)] = &[
    ("ClaimSyncBot", true, 0),
    ("Ferngully Archivist", false, 1),
    ("Marigold Lantern", false, 0),
    ("FileLicenseBot", true, 1),
    ("Orrin Vale", false, 2),
    ("CategoryTidyBot", true, 1),
    ("Tamsin Crowe", false, 0),
    ("Quillon", false, 2),
    ("CitationFixBot", true, 0),
    ("Beryl Hatch", false, 3),
    ("Ysolde Marr", false, 1),
    ("InterwikiLinkBot", true, 0),
    ("Pemberton Reed", false, 10),
    ("Halcyon Drift", false, 4),
    ("DescriptionBot", true, 0),
    ("Wren Albright", false, 2),
    ("Juniper Slate", false, 5),
    ("ArchiveRescueBot", true, 2),
    ("Caspian Holt", false, 6),
    ("Lark Emberly", false, 1),
    ("Teodor Kell", false, 7),
    ("SitelinkMergeBot", true, 0),
    ("Odalys Penn", false, 8),
    ("Ravel Quist", false, 9),
    ("Sable Wickham", false, 2),
    ("Thorne Ashby", false, 11),
    ("RedirectFixBot", true, 2),
];

pub(crate) const ADJECTIVES: &[&str] = &[
    "Amber", "Bright", "Calm", "Dusty", "Eager", "Faded", "Gentle", "Hidden", "Icy", "Jolly", "Keen", "Lively",
    "Misty", "Noble", "Olive", "Pale", "Quiet", "Rapid", "Silent", "Tidal", "Upper", "Vivid", "Wild", "Young", "Zesty",
    "Ancient", "Bold", "Crimson", "Distant", "Early", "Frozen", "Golden", "Hollow", "Inner", "Jade", "Little",
    "Mellow", "Northern", "Old", "Proud", "Royal", "Sandy", "Tall", "Urban", "Velvet", "Western", "Yellow", "Azure",
    "Broken", "Clever", "Deep", "Eastern", "Fierce", "Grand", "Humble", "Iron", "Lone", "Magic", "New", "Open",
    "Patient", "Rusty", "Sunny", "Twin",
];

pub(crate) const NOUNS: &[&str] = &[
    "River",
    "Heron",
    "Valley",
    "Lantern",
    "Harbor",
    "Meadow",
    "Falcon",
    "Bridge",
    "Castle",
    "Forest",
    "Garden",
    "Island",
    "Kettle",
    "Ladder",
    "Mountain",
    "Needle",
    "Orchard",
    "Pebble",
    "Quarry",
    "Raven",
    "Saddle",
    "Temple",
    "Violin",
    "Willow",
    "Anchor",
    "Beacon",
    "Canyon",
    "Delta",
    "Ember",
    "Fountain",
    "Glacier",
    "Hammer",
    "Inlet",
    "Jasmine",
    "Kestrel",
    "Lagoon",
    "Marble",
    "Nomad",
    "Oasis",
    "Piano",
    "Quill",
    "Reef",
    "Summit",
    "Thistle",
    "Umbrella",
    "Voyage",
    "Wagon",
    "Yarrow",
    "Zephyr",
    "Acorn",
    "Badger",
    "Compass",
    "Dune",
    "Engine",
    "Ferry",
    "Gazette",
    "Horizon",
    "Ivy",
    "Juniper",
    "Kiln",
    "Lighthouse",
    "Mill",
    "Nest",
    "Otter",
];

/// `(comment, parsedcomment)` pairs, per kind of wiki.
pub(crate) const WIKIDATA_COMMENTS: &[(&str, &str)] = &[
    (
        "/* wbsetclaim-create:2||1 */ [[Property:P31]]: [[Q5]]",
        "\u{200e}<span dir=\"auto\"><span class=\"autocomment\">Created claim: </span></span> <a href=\"/wiki/Property:P31\" title=\"Property:P31\">Property:P31</a>: <a href=\"/wiki/Q5\" title=\"Q5\">Q5</a>",
    ),
    (
        "/* wbsetdescription-add:1|en */ scientific article",
        "\u{200e}<span dir=\"auto\"><span class=\"autocomment\">Added [en] description: </span></span> scientific article",
    ),
    (
        "/* wbsetlabel-set:1|de */ Silent River",
        "\u{200e}<span dir=\"auto\"><span class=\"autocomment\">Changed [de] label: </span></span> Silent River",
    ),
    (
        "/* wbeditentity-update:0| */ Adding structured data: references",
        "\u{200e}<span dir=\"auto\"><span class=\"autocomment\">Changed an entity: </span></span> Adding structured data: references",
    ),
    (
        "/* wbsetreference-add:2| */ [[Property:P356]]: 10.1000/182",
        "\u{200e}<span dir=\"auto\"><span class=\"autocomment\">Added reference to claim: </span></span> <a href=\"/wiki/Property:P356\" title=\"Property:P356\">Property:P356</a>: 10.1000/182",
    ),
    (
        "/* wbsetsitelink-add:1|enwiki */ Golden Harbor",
        "\u{200e}<span dir=\"auto\"><span class=\"autocomment\">Added link to [enwiki]: </span></span> Golden Harbor",
    ),
];

pub(crate) const COMMONS_COMMENTS: &[(&str, &str)] = &[
    (
        "/* wbeditentity-update:0| */ Adding structured data: copyright",
        "\u{200e}<span dir=\"auto\"><span class=\"autocomment\">Changed an entity: </span></span> Adding structured data: copyright",
    ),
    ("Removed [[Category:Uncategorized images]]", "Removed <a href=\"/wiki/Category:Uncategorized_images\" title=\"Category:Uncategorized images\">Category:Uncategorized images</a>"),
    ("User created page with UploadWizard", "User created page with UploadWizard"),
    ("Adding {{Information}} template", "Adding {{Information}} template"),
    ("", ""),
];

pub(crate) const ARTICLE_COMMENTS: &[(&str, &str)] = &[
    ("", ""),
    ("/* References */ fix citation", "<span dir=\"auto\"><span class=\"autocomment\"><a href=\"#References\">→References</a>: </span> fix citation</span>"),
    ("typo", "typo"),
    ("Reverted edits by [[Special:Contributions/Quiet Heron|Quiet Heron]]", "Reverted edits by <a href=\"/wiki/Special:Contributions/Quiet_Heron\" title=\"Special:Contributions/Quiet Heron\">Quiet Heron</a>"),
    ("/* History */ expand section", "<span dir=\"auto\"><span class=\"autocomment\"><a href=\"#History\">→History</a>: </span> expand section</span>"),
    ("Rescuing 2 sources and tagging 0 as dead.) #IABot (v2.0.9.2", "Rescuing 2 sources and tagging 0 as dead.) #IABot (v2.0.9.2"),
    ("copyedit", "copyedit"),
    ("Added image", "Added image"),
];

pub(crate) const CATEGORIZE_COMMENTS: &[(&str, &str)] = &[
    ("[[:Silent River]] added to category", "<a href=\"/wiki/Silent_River\" title=\"Silent River\">Silent River</a> added to category"),
    ("[[:Golden Harbor]] removed from category", "<a href=\"/wiki/Golden_Harbor\" title=\"Golden Harbor\">Golden Harbor</a> removed from category"),
    ("[[:File:Amber Meadow 12.jpg]] added to category, [[Special:WhatLinksHere/File:Amber Meadow 12.jpg|this page is included within other pages]]", "<a href=\"/wiki/File:Amber_Meadow_12.jpg\" title=\"File:Amber Meadow 12.jpg\">File:Amber Meadow 12.jpg</a> added to category, <a href=\"/wiki/Special:WhatLinksHere/File:Amber_Meadow_12.jpg\" title=\"Special:WhatLinksHere/File:Amber Meadow 12.jpg\">this page is included within other pages</a>"),
];

/// `(log_type, log_action, comment, parsedcomment, log_action_comment)`.
pub(crate) const LOG_ACTIONS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "upload",
        "upload",
        "Uploaded own work with UploadWizard",
        "Uploaded own work with UploadWizard",
        "uploaded \"[[File:Amber Meadow 12.jpg]]\": Uploaded own work with UploadWizard",
    ),
    ("newusers", "create", "", "", "New user account"),
    ("patrol", "patrol", "", "", "automatically marked revision of page as patrolled"),
    ("thanks", "thank", "", "", "thanked another user"),
    (
        "delete",
        "delete",
        "[[WP:CSD#G11|G11]]: Unambiguous advertising",
        "<a href=\"/wiki/WP:CSD#G11\" title=\"WP:CSD\">G11</a>: Unambiguous advertising",
        "deleted page: [[WP:CSD#G11|G11]]: Unambiguous advertising",
    ),
    ("move", "move", "better title", "better title", "moved page to new title: better title"),
    ("block", "block", "Vandalism", "Vandalism", "blocked user with an expiration time of 31 hours"),
];
