//! Ports of moby/patternmatcher's and ignorefile's tests, Go's
//! `path/filepath` match table, and checks of the quirks we reproduce.

use super::*;
use proptest::prelude::*;

fn pm<S: AsRef<str> + std::fmt::Debug>(patterns: &[S]) -> PatternMatcher {
    PatternMatcher::new(patterns).unwrap_or_else(|e| panic!("{patterns:?}: {e}"))
}

/// patternmatcher's package-level `MatchesOrParentMatches(file, patterns)`.
fn matches(file: &str, patterns: &[&str]) -> Result<bool, PatternError> {
    let pm = PatternMatcher::new(patterns)?;
    let file = clean(file);
    if file == "." {
        return Ok(false); // "Don't let them exclude everything, kind of silly."
    }
    pm.try_matches_or_parent_matches(&file)
}

/// The parent-chain walk of the Go tests: every ancestor of `text` in turn.
fn ancestors_of(text: &str) -> Vec<String> {
    let parent = dir(text);
    if parent == "." {
        return Vec::new();
    }
    let parts: Vec<&str> = parent.split('/').collect();
    (1..=parts.len()).map(|i| parts[..i].join("/")).collect()
}

fn using_parent_results(pm: &PatternMatcher, text: &str) -> bool {
    let mut info = MatchInfo::default();
    for a in ancestors_of(text) {
        info = pm.matches_using_parent_results(&a, &info).unwrap().1;
    }
    pm.matches_using_parent_results(text, &info).unwrap().0
}

fn using_parent_result(pm: &PatternMatcher, text: &str) -> bool {
    let mut parent = false;
    for a in ancestors_of(text) {
        parent = pm.matches_using_parent_result(&a, parent);
    }
    pm.matches_using_parent_result(text, parent)
}

// ---- path/filepath match_test.go (Go 1.26) --------------------------------

#[test]
fn go_filepath_match_table() {
    // (pattern, name, match, bad pattern)
    let table: &[(&str, &str, bool, bool)] = &[
        ("abc", "abc", true, false),
        ("*", "abc", true, false),
        ("*c", "abc", true, false),
        ("a*", "a", true, false),
        ("a*", "abc", true, false),
        ("a*", "ab/c", false, false),
        ("a*/b", "abc/b", true, false),
        ("a*/b", "a/c/b", false, false),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", true, false),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true, false),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false, false),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false, false),
        ("a*b?c*x", "abxbbxdbxebxczzx", true, false),
        ("a*b?c*x", "abxbbxdbxebxczzy", false, false),
        ("ab[c]", "abc", true, false),
        ("ab[b-d]", "abc", true, false),
        ("ab[e-g]", "abc", false, false),
        ("ab[^c]", "abc", false, false),
        ("ab[^b-d]", "abc", false, false),
        ("ab[^e-g]", "abc", true, false),
        ("a\\*b", "a*b", true, false),
        ("a\\*b", "ab", false, false),
        ("a?b", "a☺b", true, false),
        ("a[^a]b", "a☺b", true, false),
        ("a???b", "a☺b", false, false),
        ("a[^a][^a][^a]b", "a☺b", false, false),
        ("[a-ζ]*", "α", true, false),
        ("*[a-ζ]", "A", false, false),
        ("a?b", "a/b", false, false),
        ("a*b", "a/b", false, false),
        ("[\\]a]", "]", true, false),
        ("[\\-]", "-", true, false),
        ("[x\\-]", "x", true, false),
        ("[x\\-]", "-", true, false),
        ("[x\\-]", "z", false, false),
        ("[\\-x]", "x", true, false),
        ("[\\-x]", "-", true, false),
        ("[\\-x]", "a", false, false),
        ("[]a]", "]", false, true),
        ("[-]", "-", false, true),
        ("[x-]", "x", false, true),
        ("[x-]", "-", false, true),
        ("[x-]", "z", false, true),
        ("[-x]", "x", false, true),
        ("[-x]", "-", false, true),
        ("[-x]", "a", false, true),
        ("\\", "a", false, true),
        ("[a-b-c]", "a", false, true),
        ("[", "a", false, true),
        ("[^", "a", false, true),
        ("[^bc", "a", false, true),
        ("a[", "a", false, true),
        ("a[", "ab", false, true),
        ("a[", "x", false, true),
        ("a/b[", "x", false, true),
        ("*x", "xxx", true, false),
    ];
    for &(pattern, name, want, bad) in table {
        let got = path_match(pattern, name);
        if bad {
            assert_eq!(
                got,
                Err(PatternError::BadPattern {
                    pattern: pattern.into()
                }),
                "{pattern:?} {name:?}"
            );
        } else {
            assert_eq!(got, Ok(want), "{pattern:?} {name:?}");
        }
    }
}

#[test]
fn go_filepath_match_stops_validating_after_a_mismatch() {
    // filepath.Match (unlike path.Match) only validates what it scanned.
    assert_eq!(path_match("a*[", "b"), Ok(false));
    assert!(path_match("a*[", "a").is_err());
    // A star may resume inside a multi-byte character, as in Go.
    assert_eq!(path_match("*\u{FFFD}", "é"), Ok(false));
    assert_eq!(path_match("*[\u{FFFD}]", "é"), Ok(true));
}

// ---- patternmatcher_test.go -----------------------------------------------

#[test]
fn wildcard_and_simple_matches() {
    assert_eq!(matches("fileutils.go", &["*"]), Ok(true));
    assert_eq!(matches("fileutils.go", &["*.go"]), Ok(true));
    assert_eq!(
        matches("fileutils.go", &["!fileutils.go", "*.go"]),
        Ok(true)
    );
    assert_eq!(
        matches("docs/README.md", &["docs", "!docs/README.md"]),
        Ok(false)
    );
    assert_eq!(
        matches("docs/README.md", &["docs/", "!docs/README.md"]),
        Ok(false)
    );
    assert_eq!(
        matches("docs/README.md", &["docs/*", "!docs/README.md"]),
        Ok(false)
    );
    assert_eq!(
        matches("fileutils.go", &["*.go", "!fileutils.go"]),
        Ok(false)
    );
    assert_eq!(matches(".", &["*.go"]), Ok(false));
    assert_eq!(
        matches("fileutils.go", &["!"]),
        Err(PatternError::IllegalExclusion)
    );
    assert_eq!(matches("/any/path/there", &[]), Ok(false));
    assert!(matches("/any/path/there", &["["]).is_err());
}

const MATCH_TESTS: &[(&str, &str, bool)] = &[
    ("**", "file", true),
    ("**", "file/", true),
    ("**/", "file", true), // weird one
    ("**/", "file/", true),
    ("**", "/", true),
    ("**/", "/", true),
    ("**", "dir/file", true),
    ("**/", "dir/file", true),
    ("**", "dir/file/", true),
    ("**/", "dir/file/", true),
    ("**/**", "dir/file", true),
    ("**/**", "dir/file/", true),
    ("dir/**", "dir/file", true),
    ("dir/**", "dir/file/", true),
    ("dir/**", "dir/dir2/file", true),
    ("dir/**", "dir/dir2/file/", true),
    ("**/dir", "dir", true),
    ("**/dir", "dir/file", true),
    ("**/dir2/*", "dir/dir2/file", true),
    ("**/dir2/*", "dir/dir2/file/", true),
    ("**/dir2/**", "dir/dir2/dir3/file", true),
    ("**/dir2/**", "dir/dir2/dir3/file/", true),
    ("**file", "file", true),
    ("**file", "dir/file", true),
    ("**/file", "dir/file", true),
    ("**file", "dir/dir/file", true),
    ("**/file", "dir/dir/file", true),
    ("**/file*", "dir/dir/file", true),
    ("**/file*", "dir/dir/file.txt", true),
    ("**/file*txt", "dir/dir/file.txt", true),
    ("**/file*.txt", "dir/dir/file.txt", true),
    ("**/file*.txt*", "dir/dir/file.txt", true),
    ("**/**/*.txt", "dir/dir/file.txt", true),
    ("**/**/*.txt2", "dir/dir/file.txt", false),
    ("**/*.txt", "file.txt", true),
    ("**/**/*.txt", "file.txt", true),
    ("a**/*.txt", "a/file.txt", true),
    ("a**/*.txt", "a/dir/file.txt", true),
    ("a**/*.txt", "a/dir/dir/file.txt", true),
    ("a/*.txt", "a/dir/file.txt", false),
    ("a/*.txt", "a/file.txt", true),
    ("a/*.txt**", "a/file.txt", true),
    ("a[b-d]e", "ae", false),
    ("a[b-d]e", "ace", true),
    ("a[b-d]e", "aae", false),
    ("a[^b-d]e", "aze", true),
    (".*", ".foo", true),
    (".*", "foo", false),
    ("abc.def", "abcdef", false),
    ("abc.def", "abc.def", true),
    ("abc.def", "abcZdef", false),
    ("abc?def", "abcZdef", true),
    ("abc?def", "abcdef", false),
    ("a\\\\", "a\\", true),
    ("**/foo/bar", "foo/bar", true),
    ("**/foo/bar", "dir/foo/bar", true),
    ("**/foo/bar", "dir/dir2/foo/bar", true),
    ("abc/**", "abc", false),
    ("abc/**", "abc/def", true),
    ("abc/**", "abc/def/ghi", true),
    ("**/.foo", ".foo", true),
    ("**/.foo", "bar.foo", false),
    ("a(b)c/def", "a(b)c/def", true),
    ("a(b)c/def", "a(b)c/xyz", false),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
    (
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        true,
    ),
    (
        "dist/*.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        true,
    ),
    ("a\\*b", "a*b", true),
];

const MULTI_PATTERN_TESTS: &[(&[&str], &str, bool)] = &[
    (&["**", "!util/docker/web"], "util/docker/web/foo", false),
    (
        &["**", "!util/docker/web", "util/docker/web/foo"],
        "util/docker/web/foo",
        true,
    ),
    (
        &[
            "**",
            "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        ],
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        false,
    ),
    (
        &["**", "!dist/*.whl"],
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        false,
    ),
];

#[test]
fn matches_table_all_entry_points() {
    let cases = MATCH_TESTS
        .iter()
        .map(|&(p, t, want)| (vec![p], t, want, true))
        .chain(
            MULTI_PATTERN_TESTS
                .iter()
                .map(|&(ps, t, want)| (ps.to_vec(), t, want, false)),
        );
    for (patterns, text, want, single) in cases {
        let m = pm(&patterns);
        let ctx = format!("{patterns:?} {text:?}");
        assert_eq!(
            m.try_matches_or_parent_matches(text),
            Ok(want),
            "OrParent {ctx}"
        );
        assert_eq!(m.matches_or_parent_matches(text), want, "OrParent {ctx}");
        assert_eq!(
            using_parent_results(&m, text),
            want,
            "UsingParentResults {ctx}"
        );
        let no_ctx = m
            .matches_using_parent_results(text, &MatchInfo::default())
            .unwrap()
            .0;
        assert_eq!(no_ctx, want, "NoContext {ctx}");
        // Go only runs the deprecated single-bit variant on the one-pattern table.
        if single {
            assert_eq!(
                using_parent_result(&m, text),
                want,
                "UsingParentResult {ctx}"
            );
        }
    }
}

#[test]
fn clean_patterns() {
    assert_eq!(pm(&["docs", "config"]).patterns().len(), 2);
    assert_eq!(pm(&["docs", "config", ""]).patterns().len(), 2);
    assert!(pm(&["docs", "!docs/README.md"]).exclusions());
    assert!(pm(&["docs", "  !docs/README.md"]).exclusions());
    assert!(pm(&["docs", "!docs/README.md  "]).exclusions());
    assert!(!pm(&["docs"]).exclusions());
    assert_eq!(
        PatternMatcher::new(&["!"]).unwrap_err(),
        PatternError::IllegalExclusion
    );
    let p = pm(&["./a/../b/", "!/c"]);
    assert_eq!(p.patterns()[0].as_str(), "b");
    assert!(!p.patterns()[0].is_exclusion());
    // New cleans before splitting off `!`, so "!/c" keeps its slash.
    assert_eq!(p.patterns()[1].as_str(), "/c");
    assert!(p.patterns()[1].is_exclusion());
}

#[test]
fn patternmatcher_copy_of_go_match_table() {
    // Same cases through the package-level helper: errors come from New,
    // and "a*" matches "ab/c" through its parent.
    let table: &[(&str, &str, bool, bool)] = &[
        ("abc", "abc", true, false),
        ("*", "abc", true, false),
        ("*c", "abc", true, false),
        ("a*", "a", true, false),
        ("a*", "abc", true, false),
        ("a*", "ab/c", true, false),
        ("a*/b", "abc/b", true, false),
        ("a*/b", "a/c/b", false, false),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", true, false),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true, false),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false, false),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false, false),
        ("a*b?c*x", "abxbbxdbxebxczzx", true, false),
        ("a*b?c*x", "abxbbxdbxebxczzy", false, false),
        ("ab[c]", "abc", true, false),
        ("ab[b-d]", "abc", true, false),
        ("ab[e-g]", "abc", false, false),
        ("ab[^c]", "abc", false, false),
        ("ab[^b-d]", "abc", false, false),
        ("ab[^e-g]", "abc", true, false),
        ("a\\*b", "a*b", true, false),
        ("a\\*b", "ab", false, false),
        ("a?b", "a☺b", true, false),
        ("a[^a]b", "a☺b", true, false),
        ("a???b", "a☺b", false, false),
        ("a[^a][^a][^a]b", "a☺b", false, false),
        ("[a-ζ]*", "α", true, false),
        ("*[a-ζ]", "A", false, false),
        ("a?b", "a/b", false, false),
        ("a*b", "a/b", false, false),
        ("[\\]a]", "]", true, false),
        ("[\\-]", "-", true, false),
        ("[x\\-]", "x", true, false),
        ("[x\\-]", "-", true, false),
        ("[x\\-]", "z", false, false),
        ("[\\-x]", "x", true, false),
        ("[\\-x]", "-", true, false),
        ("[\\-x]", "a", false, false),
        ("[]a]", "]", false, true),
        ("[-]", "-", false, true),
        ("[x-]", "x", false, true),
        ("[x-]", "-", false, true),
        ("[x-]", "z", false, true),
        ("[-x]", "x", false, true),
        ("[-x]", "-", false, true),
        ("[-x]", "a", false, true),
        ("\\", "a", false, true),
        ("[a-b-c]", "a", false, true),
        ("[", "a", false, true),
        ("[^", "a", false, true),
        ("[^bc", "a", false, true),
        ("a[", "a", false, true),
        ("a[", "ab", false, true),
        ("*x", "xxx", true, false),
    ];
    for &(pattern, s, want, bad) in table {
        let got = matches(s, &[pattern]);
        if bad {
            assert!(
                matches!(got, Err(PatternError::BadPattern { .. })),
                "{pattern:?} {s:?}: {got:?}"
            );
        } else {
            assert_eq!(got, Ok(want), "{pattern:?} {s:?}");
        }
    }
}

#[test]
fn compile_types_and_regexps() {
    enum T {
        Exact,
        Prefix,
        Suffix,
        Re(&'static str),
    }
    let table = [
        ("*", T::Re("^[^/]*$")),
        ("file*", T::Re("^file[^/]*$")),
        ("*file", T::Re("^[^/]*file$")),
        ("a*/b", T::Re("^a[^/]*/b$")),
        ("**", T::Suffix),
        ("**/**", T::Re("^(.*/)?.*$")),
        ("dir/**", T::Prefix),
        ("**/dir", T::Suffix),
        ("**/dir2/*", T::Re("^(.*/)?dir2/[^/]*$")),
        ("**/dir2/**", T::Re("^(.*/)?dir2/.*$")),
        ("**file", T::Suffix),
        ("**/file*txt", T::Re("^(.*/)?file[^/]*txt$")),
        ("**/**/*.txt", T::Re(r"^(.*/)?(.*/)?[^/]*\.txt$")),
        ("a[b-d]e", T::Re("^a[b-d]e$")),
        (".*", T::Re(r"^\.[^/]*$")),
        ("abc.def", T::Exact),
        ("abc?def", T::Re("^abc[^/]def$")),
        ("**/foo/bar", T::Suffix),
        ("a(b)c/def", T::Exact),
        ("a.|)$(}+{bc", T::Exact),
        (
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            T::Exact,
        ),
        // Not in Go's table: `|`, `{`, `}` are not escaped (see `compile`).
        ("a|b*", T::Re("^a|b[^/]*$")),
        ("x{2}*", T::Re("^x{2}[^/]*$")),
    ];
    for (pattern, want) in table {
        let kind = compile(&clean(pattern)).unwrap();
        match (want, kind) {
            (T::Exact, Kind::Exact) | (T::Prefix, Kind::Prefix) | (T::Suffix, Kind::Suffix) => {}
            (T::Re(want), Kind::Regexp(re)) => assert_eq!(re.as_str(), want, "{pattern:?}"),
            (_, kind) => panic!("{pattern:?}: unexpected {kind:?}"),
        }
    }
}

#[test]
fn malformed_regexp_fails_lazily_and_repeatedly() {
    // "[Local-Only]" passes filepath.Match but `l-O` is a reversed regexp range.
    let m = pm(&["[Local-Only]/"]);
    for _ in 0..2 {
        let err = m.try_matches_or_parent_matches("x").unwrap_err();
        assert!(
            matches!(&err, PatternError::BadRegexp { pattern, .. } if pattern == "[Local-Only]"),
            "{err}"
        );
        assert!(!m.matches_or_parent_matches("x"));
    }
    // An exception is never evaluated while nothing is excluded.
    assert_eq!(
        pm(&["!a*\\y"]).try_matches_or_parent_matches("a"),
        Ok(false)
    );
}

// ---- ignorefile_test.go ---------------------------------------------------

#[test]
fn read_all() {
    assert!(read_patterns("").is_empty());
    let content =
        "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ";
    let want = [
        "test1",
        "test2",
        "a/file/here",
        "lastfile",
        "!inverted/abs/path",
        "!",
        "!",
    ];
    assert_eq!(read_patterns(content), want);
    assert_eq!(try_read_patterns(content).unwrap(), want);
}

#[test]
fn read_all_details() {
    // BOM on the first line only, CRLF, comments only at column 0, `./`.
    let content = "\u{feff}a\r\n \t# not a comment \r\n#c\n./b/../c/\n\u{feff}d\n!./e\n/\n";
    assert_eq!(
        read_patterns(content),
        ["a", "# not a comment", "c", "\u{feff}d", "!e", "/"]
    );
    // bufio.Scanner's 64 KiB token limit.
    let ok = format!("x\n{}", "a".repeat(MAX_LINE - 1));
    assert_eq!(try_read_patterns(&ok).unwrap().len(), 2);
    let long = format!("x\n{}\n", "a".repeat(MAX_LINE));
    assert_eq!(
        try_read_patterns(&long),
        Err(PatternError::LineTooLong {
            line: 2,
            len: MAX_LINE
        })
    );
    assert_eq!(read_patterns(&long).len(), 2);
}

// ---- quirks Docker has and we keep ------------------------------------------

#[test]
fn go_regexp_quirks() {
    let yes = |p: &str, t: &str| {
        assert!(
            pm(&[p]).try_matches_or_parent_matches(t).unwrap(),
            "{p:?} {t:?}"
        )
    };
    let no = |p: &str, t: &str| {
        assert!(
            !pm(&[p]).try_matches_or_parent_matches(t).unwrap(),
            "{p:?} {t:?}"
        )
    };
    // `|` alternates the whole translated regexp: "^a|b[^/]*$".
    yes("a|b*", "anything");
    yes("a|b*", "xbx");
    no("a|b*", "x/y");
    // Counted repeats, POSIX and Perl classes, escapes reach the regexp.
    yes("x{2}*", "xxy");
    no("x{2}*", "xy");
    yes("[[:digit:]]*.txt", "1a.txt");
    no("[[:digit:]]*.txt", "a1.txt");
    yes("\\d\\d*", "42x");
    yes("\\x41*", "Ab");
    yes("\\101?", "Ab");
    // A trailing backslash escapes the appended `$`.
    yes("a*\\", "ab$");
    no("a*\\", "ab");
    // `\Q` quotes the rest, `$` included, so the end is unanchored.
    yes("\\Qa*", "a[^/]*$tail");
    // A bare `^` is a start-of-text anchor; `.` excludes newline, `[^/]` not.
    no("a^*", "a^");
    no("^a*", "^a");
    yes("^a*", "ab");
    yes("a*b", "a\nb");
    no("a**/b", "a\n/b");
    // Exact, prefix and suffix patterns compare bytes.
    yes("a^b", "a^b");
    yes("**/x", "x");
    yes("**x", "yx");
    // text/scanner drops a leading BOM, but only from the regexp.
    yes("\u{feff}a*", "ab");
    no("\u{feff}ab", "ab");
    // Parent directories count.
    yes("a/b", "a/b/c/d");
    no("a/b", "a/bc");
}

#[test]
fn unsupported_unicode_classes_are_errors() {
    let m = pm(&["\\pL*"]);
    assert!(matches!(
        m.try_matches_or_parent_matches("a"),
        Err(PatternError::BadRegexp { .. })
    ));
}

#[test]
fn match_info_length_is_checked() {
    let m = pm(&["a", "b"]);
    let (_, info) = pm(&["a"])
        .matches_using_parent_results("a", &MatchInfo::default())
        .unwrap();
    assert_eq!(
        m.matches_using_parent_results("a/b", &info),
        Err(PatternError::WrongMatchInfoLength { got: 1, want: 2 })
    );
}

#[test]
fn parent_results_reapply_exceptions_unlike_single_bit() {
    // docker/buildx#850: the single-bit variant forgets that `!a/b` matched.
    let m = pm(&["a", "!a/b", "a/b/c"]);
    assert!(using_parent_results(&m, "a/b/c/d"));
    assert!(m.matches_or_parent_matches("a/b/c/d"));
    let m = pm(&["*", "!a", "a/*/x"]);
    assert_eq!(
        using_parent_results(&m, "a/b/x/y"),
        m.matches_or_parent_matches("a/b/x/y")
    );
}

#[test]
fn may_reinclude_under_follows_fsutil() {
    let m = pm(&["a", "!a/b/c/*"]);
    assert!(m.may_reinclude_under("a"));
    assert!(m.may_reinclude_under("a/b"));
    assert!(m.may_reinclude_under("a/b/c"));
    assert!(!m.may_reinclude_under("a/x"));
    assert!(!m.may_reinclude_under("ab"));
    // No exceptions: never descend.
    assert!(!pm(&["a"]).may_reinclude_under("a"));
    // A wildcard exception could match anywhere: always descend.
    let m = pm(&["a", "!**/keep"]);
    assert!(m.may_reinclude_under("a"));
    assert!(m.may_reinclude_under("z/y"));
}

#[test]
fn go_clean_and_dir() {
    for (i, o) in [
        ("", "."),
        ("abc", "abc"),
        ("abc/def/", "abc/def"),
        ("a//b", "a/b"),
        ("/../a", "/a"),
        ("../../a/..", "../.."),
        ("a/../..", ".."),
        ("./a/./b/.", "a/b"),
        ("/", "/"),
        ("//", "/"),
        ("abc/../../..", "../.."),
        ("!./a", "!./a"),
    ] {
        assert_eq!(clean(i), o, "{i:?}");
    }
    assert_eq!(dir("a/b/c"), "a/b");
    assert_eq!(dir("a"), ".");
    assert_eq!(dir("a/"), "a");
    assert_eq!(dir("/a"), "/");
}

#[test]
fn pathological_patterns_are_fast() {
    let start = std::time::Instant::now();
    let stars = format!("{}b", "a*".repeat(200));
    let text = "a".repeat(300);
    assert!(!pm(&[stars.as_str()]).matches_or_parent_matches(&text));
    assert_eq!(path_match(&stars, &text), Ok(false));
    let counted = "a{1000}".repeat(20);
    assert!(!pm(&[format!("{counted}*")]).matches_or_parent_matches(&text));
    let big = "a{1000}".repeat(4000);
    assert!(
        pm(&[format!("{big}*")])
            .try_matches_or_parent_matches("a")
            .is_err()
    ); // too large
    // `\Q\E` lets `{1}` nest; Go's tree-height limit is 1000.
    let nested = |n: usize| {
        pm(&[format!("a*{}", "\\Q\\E{1}".repeat(n))]).try_matches_or_parent_matches("ab")
    };
    assert_eq!(nested(997), Ok(true));
    assert!(nested(998).is_err());
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics(
        patterns in prop::collection::vec(r"[!ab/.*?\[\]\^\\{}|(),0-9:\-$é\u{feff}\n pPQEdx]{0,14}", 0..4),
        paths in prop::collection::vec(r"[ab/.*\[\]\\é\n{}|0-9]{0,12}", 0..4),
    ) {
        for p in &patterns {
            for t in &paths {
                let _ = path_match(p, t);
            }
        }
        let content = patterns.join("\n");
        let _ = read_patterns(&content);
        if let Ok(m) = PatternMatcher::new(&patterns) {
            for t in &paths {
                let a = m.try_matches_or_parent_matches(t);
                let b = m.matches_using_parent_results(t, &MatchInfo::default()).map(|r| r.0);
                prop_assert_eq!(a, b);
                let _ = m.matches_using_parent_result(t, true);
                let _ = m.may_reinclude_under(t);
            }
        }
    }
}

#[test]
fn matcher_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PatternMatcher>();
    assert_send_sync::<PatternError>();
}
