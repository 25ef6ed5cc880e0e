use super::*;

fn dump(df: &str) -> String {
    parse(df.as_bytes()).unwrap().dump()
}

#[test]
fn continuation_with_comments_and_blank_lines() {
    assert_eq!(
        dump("FROM x\nRUN a \\\n# c\n\n  b\n"),
        "(from \"x\")\n(run \"a   b\")"
    );
}

#[test]
fn escape_directive_switches_token() {
    let p = parse(b"# escape=`\nFROM x\nRUN a `\n b\n").unwrap();
    assert_eq!(p.escape, '`');
    assert_eq!(p.dump(), "(from \"x\")\n(run \"a  b\")");
}

#[test]
fn heredocs_are_collected() {
    let p =
        parse(b"FROM x\nRUN <<EOF <<-'EOT'\necho $A\nEOF\n\tcat\n\tEOT\nCOPY <<X /y\nhello\nX\n")
            .unwrap();
    let run = &p.nodes[1];
    assert_eq!(run.heredocs.len(), 2);
    assert_eq!(run.heredocs[0].content, "echo $A\n");
    assert!(run.heredocs[0].expand);
    assert!(!run.heredocs[1].expand);
    assert!(run.heredocs[1].chomp);
    assert_eq!(run.end_line, 6);
    assert_eq!(p.nodes[2].heredocs[0].content, "hello\n");
}

#[test]
fn errors_carry_lines() {
    let e = parse(b"FROM x\nRUN <<EOF\nnever ends\n").unwrap_err();
    assert!(e.message.starts_with("unterminated heredoc"));
    assert_eq!(e.start_line, 2);
    let e = parse(b"# escape=x\nFROM a\n").unwrap_err();
    assert_eq!(e.start_line, 1);
    let e = parse(b"\n# just a comment\n").unwrap_err();
    assert_eq!(e.message, "file with no instructions");
    let e = parse(b"FROM a\nRUN \xff\n").unwrap_err();
    assert_eq!(e.start_line, 2);
}

#[test]
fn limits_are_enforced() {
    let limits = Limits {
        max_line_bytes: 10,
        ..Limits::default()
    };
    let e = parse_with_limits(b"FROM aaaaaaaaaaaaaaaaaaaaaa\n", &limits).unwrap_err();
    assert!(e.message.contains("limit"));
}
