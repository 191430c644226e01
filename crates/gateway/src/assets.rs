//! The browser side, compiled into the binary: the dashboard, the Wikipedia demo page, the
//! `viewcast.js` client library and the Vega libraries the pages load.
//!
//! Owns: the URL path -> embedded file mapping and each file's content type. The bytes come from
//! `web/` through `build.rs`, so the page works with no network beyond the viewcast server.
//! Never touches: routing or HTTP headers other than the content type (the routes own those).

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// One embedded file, ready to serve.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub bytes: &'static [u8],
    pub content_type: &'static str,
}

/// The embedded file served at `path` (a URL path without query), if any. `/` is the page.
pub fn asset(path: &str) -> Option<Asset> {
    let path = if path == "/" { "/index.html" } else { path };
    FILES
        .iter()
        .find(|(served, _)| *served == path)
        .map(|(served, bytes)| Asset { bytes, content_type: content_type(served) })
}

fn content_type(path: &str) -> &'static str {
    let file = path.rsplit('/').next().unwrap_or(path);
    match file.rsplit_once('.').map(|(_, ext)| ext) {
        // Pages at extensionless paths (`/demo/wikipedia`).
        None => "text/html; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_index_are_the_page() {
        let root = asset("/").expect("/ is served");
        let index = asset("/index.html").expect("/index.html is served");
        assert_eq!(root.bytes, index.bytes);
        assert_eq!(root.content_type, "text/html; charset=utf-8");
        let html = std::str::from_utf8(root.bytes).unwrap();
        for script in ["/vendor/vega.min.js", "/vendor/vega-lite.min.js", "/vendor/vega-embed.min.js", "/dashboard.js"]
        {
            assert!(html.contains(script), "page loads {script}");
        }
    }

    #[test]
    fn demo_page_is_served_as_html() {
        let demo = asset("/demo/wikipedia").expect("/demo/wikipedia is served");
        assert_eq!(demo.content_type, "text/html; charset=utf-8");
        let html = std::str::from_utf8(demo.bytes).unwrap();
        assert!(html.contains("/demo.js"), "the demo page loads /demo.js");
    }

    #[test]
    fn client_library_is_an_es_module() {
        let lib = asset("/viewcast.js").expect("/viewcast.js is served");
        assert_eq!(lib.content_type, "text/javascript; charset=utf-8");
        let text = std::str::from_utf8(lib.bytes).unwrap();
        assert!(text.contains("export function connect("), "viewcast.js exports connect()");
        assert!(text.contains("/api/v1/ws"), "viewcast.js speaks the multiplexed protocol");
    }

    #[test]
    fn page_sources_and_vendored_libraries_are_served() {
        for (path, content_type, starts_with) in [
            ("/dashboard.js", "text/javascript; charset=utf-8", None),
            ("/demo.js", "text/javascript; charset=utf-8", None),
            ("/panels.js", "text/javascript; charset=utf-8", None),
            ("/style.css", "text/css; charset=utf-8", None),
            ("/vendor/vega.min.js", "text/javascript; charset=utf-8", Some(".vega=")),
            ("/vendor/vega-lite.min.js", "text/javascript; charset=utf-8", Some(".vegaLite=")),
            ("/vendor/vega-embed.min.js", "text/javascript; charset=utf-8", Some(".vegaEmbed=")),
        ] {
            let a = asset(path).unwrap_or_else(|| panic!("{path} is served"));
            assert_eq!(a.content_type, content_type, "{path}");
            assert!(!a.bytes.is_empty(), "{path} is not empty");
            if let Some(global) = starts_with {
                // The UMD wrapper defines the global the page's plain <script> tags rely on.
                let head = String::from_utf8_lossy(&a.bytes[..a.bytes.len().min(2048)]);
                assert!(head.contains(global), "{path} is a UMD build defining {global}");
            }
        }
    }

    #[test]
    fn unknown_paths_are_not_served() {
        for path in [
            "",
            "/index",
            "/vendor/",
            "/vendor/vega.js",
            "/viewcast.js/",
            "/app.js",
            "/demo/",
            "/demo.html",
            "/../Cargo.toml",
            "/node_modules/vega/build/vega.min.js",
        ] {
            assert!(asset(path).is_none(), "{path} must not be served");
        }
    }
}
