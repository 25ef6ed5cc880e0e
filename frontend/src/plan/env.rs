//! The ordered environment a stage's instructions expand against and run
//! with: base image ENV, then ENV and ARG values in instruction order.

use crate::shell::VarLookup;

/// An ordered list of variables; setting a name again replaces its value
/// and moves it to the end, as BuildKit's `EnvList.AddOrReplace`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EnvList(Vec<(String, String)>);

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
        self.0.retain(|(k, _)| k != key);
        self.0.push((key.to_string(), value.to_string()));
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

impl VarLookup for EnvList {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name)
    }
}
