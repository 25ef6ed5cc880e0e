//! Fuzzes the `.dockerignore` matcher: reading an ignore file, compiling
//! its patterns and matching paths must never panic, and the walker's
//! primitive (`matches_using_parent_results` without parent information)
//! must agree with `try_matches_or_parent_matches`, as documented.
//!
//! Input: the ignore file's text, a NUL byte, then the paths to match, one
//! per line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_frontend::dockerignore::{
    MatchInfo, PatternMatcher, path_match, read_patterns, try_read_patterns,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (ignore, paths) = text.split_once('\0').unwrap_or((&text, ""));
    let _ = try_read_patterns(ignore);
    let patterns = read_patterns(ignore);
    let paths: Vec<&str> = paths.split('\n').collect();
    for p in &patterns {
        for path in &paths {
            let _ = path_match(p.trim_start_matches('!'), path);
        }
    }
    let Ok(matcher) = PatternMatcher::new(&patterns) else {
        return;
    };
    for path in &paths {
        let direct = matcher.try_matches_or_parent_matches(path);
        let walked = matcher.matches_using_parent_results(path, &MatchInfo::default());
        assert_eq!(
            direct.as_ref().ok(),
            walked.as_ref().ok().map(|(m, _)| m),
            "path {path:?}: {direct:?} vs {walked:?}"
        );
        let _ = matcher.matches_or_parent_matches(path);
        let _ = matcher.matches_using_parent_result(path, false);
        let _ = matcher.matches_using_parent_result(path, true);
        let _ = matcher.may_reinclude_under(path);
        // The walker passes each directory's info down to its children.
        let mut info = MatchInfo::default();
        let mut prefix = String::new();
        for comp in path.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
            match matcher.matches_using_parent_results(&prefix, &info) {
                Ok((_, next)) => info = next,
                Err(_) => break,
            }
        }
    }
});
