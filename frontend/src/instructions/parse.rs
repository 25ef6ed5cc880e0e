//! Node to typed instruction, per keyword.

use super::{
    ArgDef, Command, CommandLine, Copy, Flags, From, Healthcheck, INSTRUCTIONS, InlineFile,
    Instruction, KeyValue, Run, SourcesAndDest, parse_go_duration, suggest,
};
use crate::parser::{Node, chomp_heredoc_content, parse_heredoc};

fn exactly_one(cmd: &str, args: &[String]) -> Result<String, String> {
    match args {
        [one] => Ok(one.clone()),
        _ => Err(format!("{cmd} requires exactly one argument")),
    }
}

fn at_least_one(cmd: &str, args: &[String]) -> Result<(), String> {
    if args.is_empty() {
        return Err(format!("{cmd} requires at least one argument"));
    }
    Ok(())
}

fn no_flags(node: &Node) -> Result<(), String> {
    Flags::parse(&node.flags, &[], &[], &[]).map(|_| ())
}

/// BuildKit's `handleJSONArgs`: exec form as is, shell form joined.
fn json_args(args: &[String], json: bool) -> Vec<String> {
    if args.is_empty() {
        return Vec::new();
    }
    if json {
        return args.to_vec();
    }
    vec![args.join(" ")]
}

fn command_line(node: &Node, args: &[String]) -> CommandLine {
    let files = node
        .heredocs
        .iter()
        .map(|h| InlineFile {
            name: h.name.clone(),
            data: h.content.clone(),
            chomp: h.chomp,
            expand: h.expand,
        })
        .collect();
    CommandLine {
        args: json_args(args, node.json),
        files,
        prepend_shell: !node.json,
    }
}

fn key_values(cmd: &str, args: &[String]) -> Result<Vec<KeyValue>, String> {
    at_least_one(cmd, args)?;
    if !args.len().is_multiple_of(3) {
        return Err(format!("Bad input to {cmd}, too many arguments"));
    }
    args.chunks(3)
        .map(|c| {
            if c[0].is_empty() {
                return Err(format!("{cmd} names can not be blank"));
            }
            Ok(KeyValue {
                key: c[0].clone(),
                value: c[1].clone(),
                legacy: c[2].is_empty(),
            })
        })
        .collect()
}

fn sources_and_dest(node: &Node, cmd: &str, args: &[String]) -> Result<SourcesAndDest, String> {
    if args.len() < 2 {
        return Err(format!(
            "{cmd} requires at least two arguments, but only one was provided. Destination could not be determined"
        ));
    }
    let (srcs, dest) = args.split_at(args.len() - 1);
    let dest = dest[0].clone();
    if parse_heredoc(&dest)?.is_some() {
        return Err(format!("{cmd} cannot accept a heredoc as a destination"));
    }
    let mut sources = Vec::new();
    let mut contents = Vec::new();
    for src in srcs {
        match parse_heredoc(src)? {
            Some(doc) => {
                let body = node
                    .heredocs
                    .iter()
                    .find(|h| h.name == doc.name)
                    .map(|h| h.content.clone())
                    .unwrap_or_default();
                let data = if doc.chomp {
                    chomp_heredoc_content(&body)
                } else {
                    body
                };
                contents.push(InlineFile {
                    name: doc.name,
                    data,
                    chomp: doc.chomp,
                    expand: doc.expand,
                });
            }
            None => sources.push(src.clone()),
        }
    }
    Ok(SourcesAndDest {
        sources,
        contents,
        dest,
    })
}

fn parse_copy(node: &Node, args: &[String], add: bool) -> Result<Command, String> {
    let cmd = if add { "ADD" } else { "COPY" };
    if args.len() < 2 {
        return Err(format!(
            "{cmd} requires at least two arguments, but only one was provided. Destination could not be determined"
        ));
    }
    let flags = if add {
        Flags::parse(
            &node.flags,
            &["link", "keep-git-dir", "unpack"],
            &["chown", "chmod", "checksum"],
            &["exclude"],
        )?
    } else {
        Flags::parse(
            &node.flags,
            &["link", "parents"],
            &["chown", "chmod", "from"],
            &["exclude"],
        )?
    };
    let c = Copy {
        paths: sources_and_dest(node, cmd, args)?,
        from: flags.string("from").unwrap_or_default(),
        chown: flags.string("chown").unwrap_or_default(),
        chmod: flags.string("chmod").unwrap_or_default(),
        link: flags.bool("link"),
        parents: flags.bool("parents"),
        exclude: flags.list("exclude"),
        checksum: flags.string("checksum").unwrap_or_default(),
        unpack: flags.is_used("unpack").then(|| flags.bool("unpack")),
        keep_git_dir: flags
            .is_used("keep-git-dir")
            .then(|| flags.bool("keep-git-dir")),
    };
    Ok(if add {
        Command::Add(c)
    } else {
        Command::Copy(c)
    })
}

fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

fn parse_from(node: &Node, args: &[String]) -> Result<Command, String> {
    let name = match args {
        [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
            let lower = name.to_ascii_lowercase();
            if !valid_stage_name(&lower) {
                return Err(format!(
                    "invalid name for build stage: \"{name}\", name can't start with a number or contain symbols"
                ));
            }
            lower
        }
        [_] => String::new(),
        _ => return Err("FROM requires either one or three arguments".to_string()),
    };
    let flags = Flags::parse(&node.flags, &[], &["platform"], &[])?;
    Ok(Command::From(From {
        base: args[0].clone(),
        name,
        platform: flags.string("platform").unwrap_or_default(),
    }))
}

fn parse_run(node: &Node, args: &[String]) -> Result<Command, String> {
    let flags = Flags::parse(&node.flags, &[], &["network", "security"], &["mount"])?;
    let network = flags
        .string("network")
        .unwrap_or_else(|| "default".to_string());
    if !matches!(network.as_str(), "default" | "none" | "host") {
        return Err(format!(
            "invalid network mode \"{network}\" (one of default, none, host)"
        ));
    }
    let security = flags
        .string("security")
        .unwrap_or_else(|| "sandbox".to_string());
    if !matches!(security.as_str(), "sandbox" | "insecure") {
        return Err(format!(
            "security \"{security}\" is not valid (one of sandbox, insecure)"
        ));
    }
    let mounts = flags.list("mount");
    for m in &mounts {
        // Values are expanded when planning; the structure is checked now.
        super::parse_mount(m, &mut |v| Ok(v.to_string()))?;
    }
    Ok(Command::Run(Run {
        command: command_line(node, args),
        mounts,
        network,
        security,
    }))
}

fn parse_onbuild(node: &Node, args: &[String]) -> Result<Command, String> {
    at_least_one("ONBUILD", args)?;
    no_flags(node)?;
    let trigger = args[0].trim().to_ascii_uppercase();
    match trigger.as_str() {
        "ONBUILD" => return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".to_string()),
        "MAINTAINER" | "FROM" => {
            return Err(format!("{trigger} isn't allowed as an ONBUILD trigger"));
        }
        _ => {}
    }
    let original = node.original.trim_start();
    let mut expr = original
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("onbuild"))
        .map_or(original, |_| original[7..].trim_start())
        .to_string();
    for h in &node.heredocs {
        expr.push('\n');
        expr.push_str(&h.content);
        expr.push_str(&h.name);
    }
    Ok(Command::Onbuild(expr))
}

fn parse_healthcheck(node: &Node, args: &[String]) -> Result<Command, String> {
    at_least_one("HEALTHCHECK", args)?;
    let typ = args[0].to_ascii_uppercase();
    let rest = &args[1..];
    if typ == "NONE" {
        if !rest.is_empty() {
            return Err("HEALTHCHECK NONE takes no arguments".to_string());
        }
        no_flags(node)?;
        return Ok(Command::Healthcheck(Healthcheck {
            test: vec![typ],
            interval: 0,
            timeout: 0,
            start_period: 0,
            start_interval: 0,
            retries: 0,
        }));
    }
    let flags = Flags::parse(
        &node.flags,
        &[],
        &[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ],
        &[],
    )?;
    if typ != "CMD" {
        return Err(format!("Unknown type \"{typ}\" in HEALTHCHECK (try CMD)"));
    }
    let cmd = json_args(rest, node.json);
    if cmd.is_empty() {
        return Err("Missing command after HEALTHCHECK CMD".to_string());
    }
    let mut test = vec![if node.json {
        "CMD".to_string()
    } else {
        "CMD-SHELL".to_string()
    }];
    test.extend(cmd);
    let interval = |name: &str| -> Result<i64, String> {
        let Some(v) = flags.string(name).filter(|v| !v.is_empty()) else {
            return Ok(0);
        };
        let d = parse_go_duration(&v).map_err(|e| format!("--{name}: {e}"))?;
        if d != 0 && d < 1_000_000 {
            return Err(format!("Interval \"{name}\" cannot be less than 1ms"));
        }
        Ok(d)
    };
    let retries = match flags.string("retries").filter(|v| !v.is_empty()) {
        None => 0,
        Some(v) => {
            let r: i64 = v
                .parse()
                .ok()
                .filter(|r| i32::try_from(*r).is_ok())
                .ok_or_else(|| format!("--retries: invalid number \"{v}\""))?;
            if r < 0 {
                return Err(format!("--retries cannot be negative ({r})"));
            }
            r
        }
    };
    Ok(Command::Healthcheck(Healthcheck {
        test,
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries,
    }))
}

/// Types one parser node into an [`Instruction`]; the error is the bare
/// message (callers add the location).
pub fn parse_instruction(node: &Node) -> Result<Instruction, String> {
    let args = node.string_args();
    let keyword = node.keyword();
    let command = match keyword.as_str() {
        "env" | "label" => {
            no_flags(node)?;
            let name = keyword.to_ascii_uppercase();
            let kvs = key_values(&name, &args)?;
            if keyword == "env" {
                Command::Env(kvs)
            } else {
                Command::Label(kvs)
            }
        }
        "maintainer" => {
            let v = exactly_one("MAINTAINER", &args)?;
            no_flags(node)?;
            Command::Maintainer(v)
        }
        "add" => parse_copy(node, &args, true)?,
        "copy" => parse_copy(node, &args, false)?,
        "from" => parse_from(node, &args)?,
        "onbuild" => parse_onbuild(node, &args)?,
        "workdir" => {
            let v = exactly_one("WORKDIR", &args)?;
            no_flags(node)?;
            Command::Workdir(v)
        }
        "run" => parse_run(node, &args)?,
        "cmd" => {
            no_flags(node)?;
            Command::Cmd(command_line(node, &args))
        }
        "entrypoint" => {
            no_flags(node)?;
            Command::Entrypoint(command_line(node, &args))
        }
        "healthcheck" => parse_healthcheck(node, &args)?,
        "expose" => {
            at_least_one("EXPOSE", &args)?;
            no_flags(node)?;
            let mut ports = args.clone();
            ports.sort();
            Command::Expose(ports)
        }
        "user" => {
            let v = exactly_one("USER", &args)?;
            no_flags(node)?;
            Command::User(v)
        }
        "volume" => {
            at_least_one("VOLUME", &args)?;
            no_flags(node)?;
            let mut vols = Vec::with_capacity(args.len());
            for v in &args {
                let v = v.trim();
                if v.is_empty() {
                    return Err("VOLUME specified can not be an empty string".to_string());
                }
                vols.push(v.to_string());
            }
            Command::Volume(vols)
        }
        "stopsignal" => {
            let v = exactly_one("STOPSIGNAL", &args)?;
            no_flags(node)?;
            Command::Stopsignal(v)
        }
        "arg" => {
            at_least_one("ARG", &args)?;
            no_flags(node)?;
            let mut defs = Vec::with_capacity(args.len());
            for a in &args {
                let def = match a.split_once('=') {
                    Some(("", _)) => return Err("ARG names can not be blank".to_string()),
                    Some((k, v)) => ArgDef {
                        key: k.to_string(),
                        value: Some(v.to_string()),
                    },
                    None => ArgDef {
                        key: a.clone(),
                        value: None,
                    },
                };
                defs.push(def);
            }
            Command::Arg(defs)
        }
        "shell" => {
            no_flags(node)?;
            let shell = json_args(&args, node.json);
            if shell.is_empty() {
                return Err("SHELL requires at least one argument".to_string());
            }
            if !node.json {
                return Err(format!(
                    "SHELL requires the arguments to be in JSON form: {}",
                    node.original.trim()
                ));
            }
            Command::Shell(shell)
        }
        _ => {
            let mut msg = format!("unknown instruction: {}", node.value);
            if let Some(s) = suggest(&node.value, INSTRUCTIONS.iter().copied()) {
                msg.push_str(&format!(" (did you mean {s}?)"));
            }
            return Err(msg);
        }
    };
    Ok(Instruction {
        command,
        original: node.original.clone(),
        start_line: node.start_line,
        end_line: node.end_line,
    })
}
