//! The data path's requests on the engine's control socket: `data-path`
//! (mode, interfaces and I/O counters) and shadow evaluation (`shadow`,
//! `shadow-status`, `shadow-clear`; see [`crate::shadow`]).

use std::sync::Arc;

use palisade_engine::control::Extension;
use serde_json::{json, Value};

use crate::shadow::ShadowSlot;
use crate::stats::DataPathInfo;

/// The data path's mode, interfaces and counters, as `palisade status` shows them under `data_path`.
///
/// ```
/// let info = palisade_dataplane::DataPathInfo::new(vec!["pa".into()], false, 1);
/// let r = palisade_dataplane::service::report(&info);
/// assert_eq!(r["mode"], "monitor");
/// assert_eq!(r["interfaces"][0]["interface"], "pa");
/// ```
pub fn report(info: &DataPathInfo) -> Value {
    json!({
        "mode": if info.forwards() { "bridge" } else { "monitor" },
        "workers": info.workers(),
        "interfaces": info.totals(),
    })
}

/// The control-socket extension of a data path: answers `{"cmd":"data-path"}`
/// from `info`, and the shadow requests from `shadow` when given.
///
/// ```
/// use std::sync::Arc;
/// let info = Arc::new(palisade_dataplane::DataPathInfo::new(vec!["pa".into(), "pb".into()], true, 1));
/// let ext = palisade_dataplane::service::extension(info, None);
/// let dir = std::env::temp_dir().join(format!("palisade-dp-service-doc-{}", std::process::id()));
/// let (engine, _) = palisade_engine::Engine::open(&dir.join("none.toml"), &dir.join("state"), Default::default()).unwrap();
/// let reply = ext(&engine, &serde_json::json!({"cmd": "data-path"})).unwrap();
/// assert_eq!(reply["data_path"]["mode"], "bridge");
/// assert!(ext(&engine, &serde_json::json!({"cmd": "nonsense"})).is_none());
/// drop(engine);
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn extension(info: Arc<DataPathInfo>, shadow: Option<Arc<ShadowSlot>>) -> Extension {
    let shadow = shadow.map(|s| s.extension());
    Arc::new(move |engine, req| {
        if req.get("cmd").and_then(Value::as_str) == Some("data-path") {
            return Some(json!({"ok": true, "data_path": report(&info)}));
        }
        shadow.as_ref().and_then(|f| f(engine, req))
    })
}
