//! The ordered environment a stage's instructions expand against and run
//! with: base image ENV, then ENV and ARG values in instruction order.

use crate::shell::VarLookup;
use sha2::{Digest, Sha256};
use std::cell::OnceCell;
use std::sync::Arc;

/// The `K=V` rendering of an environment and its digest, computed once per
/// change: consecutive steps share them.
#[derive(Debug, Clone)]
pub(crate) struct Rendered {
    pub strings: Arc<Vec<Arc<str>>>,
    pub digest: String,
}

/// An ordered list of variables; setting a name again replaces its value
/// and moves it to the end, as BuildKit's `EnvList.AddOrReplace`.
#[derive(Debug, Clone, Default)]
pub(crate) struct EnvList {
    vars: Vec<(String, String)>,
    /// `K=V` of each entry of `vars`, kept in step so a render is cheap.
    strings: Vec<Arc<str>>,
    rendered: OnceCell<Rendered>,
}

impl EnvList {
    pub(crate) fn from_env_strings(env: &[String]) -> Self {
        let mut list = Self::default();
        for e in env {
            let (k, v) = e.split_once('=').unwrap_or((e, ""));
            list.set(k, v);
        }
        list
    }

    pub(crate) fn set(&mut self, key: &str, value: &str) {
        if let Some(i) = self.vars.iter().position(|(k, _)| k == key) {
            self.vars.remove(i);
            self.strings.remove(i);
        }
        self.vars.push((key.to_string(), value.to_string()));
        self.strings.push(Arc::from(format!("{key}={value}")));
        self.rendered = OnceCell::new();
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `K=V` strings and their digest.
    pub(crate) fn rendered(&self) -> &Rendered {
        self.rendered.get_or_init(|| {
            let strings = self.strings.clone();
            let mut h = Sha256::new();
            for s in &strings {
                h.update(s.as_bytes());
                h.update([0]);
            }
            Rendered {
                strings: Arc::new(strings),
                digest: hex::encode(h.finalize()),
            }
        })
    }
}

impl VarLookup for EnvList {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name)
    }
}
