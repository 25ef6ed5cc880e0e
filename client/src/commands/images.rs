//! `strata images` and `strata history`, from the embedded image store.

use crate::embedded::images::{ImageIndex, read_json};
use anyhow::{Result, anyhow};
use clap::Args;
use std::fmt::Write as _;
use std::path::Path;

/// Arguments of `strata history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Image name, tag or ID.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Do not truncate CREATED BY.
    #[arg(long)]
    pub no_trunc: bool,
}

/// Docker's human sizes: `1.23MB`, `512B` (decimal units).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{}{}", trim(v), UNITS[i])
    }
}

/// Go's `%.4g` for 1 <= v < 1000 (docker/go-units `HumanSize`).
fn trim(v: f64) -> String {
    let int_digits = if v < 10.0 {
        1
    } else if v < 100.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.prec$}", prec = 4 - int_digits);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Parses RFC 3339 UTC (`2024-01-02T03:04:05.123Z`) to Unix seconds.
fn parse_time(s: &str) -> Option<i64> {
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, dd) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.trim_end_matches('Z');
    let time = time.split(['+', '.']).next()?;
    let mut t = time.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// `5 minutes ago`, as Docker prints it.
pub fn ago(created: &str) -> String {
    let Some(t) = parse_time(created) else {
        return "N/A".to_string();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let s = (now - t).max(0);
    let (n, unit) = match s {
        0..=59 => return format!("{s} seconds ago"),
        60..=3599 => (s / 60, "minute"),
        3600..=86_399 => (s / 3600, "hour"),
        86_400..=1_209_599 => (s / 86_400, "day"),
        1_209_600..=5_183_999 => (s / 604_800, "week"),
        5_184_000..=63_071_999 => (s / 2_592_000, "month"),
        _ => (s / 31_536_000, "year"),
    };
    if n == 1 {
        format!("{} {unit} ago", if unit == "hour" { "An" } else { "1" })
    } else {
        format!("{n} {unit}s ago")
    }
}

fn short(digest: &str) -> String {
    digest
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

/// Renders `strata images`.
pub fn images(home: &Path) -> Result<String> {
    let index = ImageIndex::load(home)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<40} {:<12} {:<14} {:<16} SIZE",
        "REPOSITORY", "TAG", "IMAGE ID", "CREATED"
    );
    for (tag, manifest) in &index.tags {
        let Some(rec) = index.images.get(manifest) else {
            continue;
        };
        let r = strata_frontend::plan::ImageRef::parse(tag).map_err(|e| anyhow!(e))?;
        let familiar = r.familiar();
        let (repo, t) = familiar.rsplit_once(':').unwrap_or((&familiar, "latest"));
        let _ = writeln!(
            out,
            "{repo:<40} {t:<12} {:<14} {:<16} {}",
            short(&rec.config_digest),
            ago(&rec.created),
            human_size(rec.size)
        );
    }
    Ok(out)
}

/// Renders `strata history IMAGE`, newest entry first, like `docker history`.
pub fn history(home: &Path, args: &HistoryArgs) -> Result<String> {
    let index = ImageIndex::load(home)?;
    let rec = index
        .find(&args.image)
        .ok_or_else(|| anyhow!("No such image: {}", args.image))?;
    let config = read_json(home, &rec.config_digest)?;
    let manifest = read_json(home, &rec.manifest_digest)?;
    let sizes: Vec<u64> = manifest["layers"]
        .as_array()
        .map(|l| l.iter().map(|x| x["size"].as_u64().unwrap_or(0)).collect())
        .unwrap_or_default();
    let hist = config["history"].as_array().cloned().unwrap_or_default();
    let mut layer = 0;
    let mut rows = Vec::with_capacity(hist.len());
    for h in &hist {
        let empty = h["empty_layer"].as_bool().unwrap_or(false);
        let size = if empty {
            0
        } else {
            let s = sizes.get(layer).copied().unwrap_or(0);
            layer += 1;
            s
        };
        rows.push((
            h["created"].as_str().unwrap_or("").to_string(),
            h["created_by"].as_str().unwrap_or("").to_string(),
            size,
            h["comment"].as_str().unwrap_or("").to_string(),
        ));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:<16} {:<45} {:<10} COMMENT",
        "IMAGE", "CREATED", "CREATED BY", "SIZE"
    );
    for (i, (created, by, size, comment)) in rows.into_iter().rev().enumerate() {
        let id = if i == 0 {
            short(&rec.config_digest)
        } else {
            "<missing>".to_string()
        };
        let by = if args.no_trunc || by.chars().count() <= 44 {
            by
        } else {
            format!("{}…", by.chars().take(44).collect::<String>())
        };
        let _ = writeln!(
            out,
            "{id:<14} {:<16} {by:<45} {:<10} {comment}",
            ago(&created),
            human_size(size)
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_print_like_docker() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1_234_567), "1.235MB");
        assert_eq!(human_size(123_456), "123.5kB");
        assert_eq!(human_size(5_000), "5kB");
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20.5Z"), Some(1_700_000_000));
    }
}
