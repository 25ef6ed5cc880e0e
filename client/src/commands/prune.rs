//! `strata prune`: remove build cache nobody uses (`docker builder prune`).

use crate::format;
use anyhow::{Result, anyhow, bail};
use clap::Args;
use std::collections::HashMap;
use strata_proto::build::v1 as pb;

/// Arguments of `strata prune`.
#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    /// Keep the most recently used cache up to this size (e.g. `10GB`,
    /// `512MiB`, `1000000`).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub keep_storage: Option<u64>,
    /// Only remove cache unused for this long: `until=24h`, `until=90m`.
    #[arg(long = "filter", value_name = "until=DURATION")]
    pub filters: Vec<String>,
    /// Show what would be removed without removing it.
    #[arg(long)]
    pub dry_run: bool,
    /// Cache namespace (tenant or project); the default one when unset.
    #[arg(long, env = "STRATA_NAMESPACE", default_value = "")]
    pub namespace: String,
}

/// Parses `10GB`, `1.5GiB`, `512MB`, `100kB`, `42` (bytes), as Docker's
/// `--keep-storage` does (decimal and binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a number and a unit like 10GB"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024.0f64.powi(4),
        other => return Err(format!("invalid size {s:?}: unknown unit {other:?}")),
    };
    Ok((n * mult) as u64)
}

/// Runs `strata prune`.
pub async fn run(client: &mut crate::connect::Client, args: &PruneArgs) -> Result<()> {
    let mut filters = HashMap::new();
    for f in &args.filters {
        let Some((k, v)) = f.split_once('=') else {
            bail!("--filter {f:?}: expected KEY=VALUE, e.g. until=24h");
        };
        filters.insert(k.to_string(), v.to_string());
    }
    let resp = client
        .prune(pb::PruneRequest {
            keep_storage_bytes: args.keep_storage.unwrap_or(0),
            filters,
            dry_run: args.dry_run,
            namespace: args.namespace.clone(),
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow!("{}", s.message()))?
        .into_inner();
    let verb = if args.dry_run {
        "Would remove"
    } else {
        "Removed"
    };
    println!(
        "{verb} {} cache entries and {} blobs",
        resp.deleted_cache_entries, resp.deleted_blobs
    );
    println!(
        "Total reclaimed space: {}",
        format::human_size(resp.reclaimed_bytes)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(parse_size("42").unwrap(), 42);
        assert_eq!(parse_size("10GB").unwrap(), 10_000_000_000);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5kb").unwrap(), 1500);
        assert!(parse_size("ten").unwrap_err().contains("ten"));
        assert!(parse_size("5 parsecs").unwrap_err().contains("parsecs"));
    }
}
