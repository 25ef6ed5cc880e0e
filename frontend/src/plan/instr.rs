//! One instruction at a time: expansion, config changes, history text and
//! the layer steps with their cache keys.

use super::config::{go_list, go_quoted_list, parse_ports};
use super::dispatch::{Planner, Source, is_proxy_arg};
use super::env::EnvList;
use super::{
    Action, ConfigChange, CopyFrom, ExecContext, HealthConfig, HistoryItem, ImageConfig,
    InlineMount, PlanError, PlannedMount, Platform, StepKind,
};
use crate::instructions::{Command, CommandLine, Instruction, Run, parse_mount};
use crate::parser::parse_heredoc;
use std::collections::BTreeMap;

/// The state of a stage while its instructions are dispatched.
pub(crate) struct StageBuild {
    pub index: usize,
    pub platform: Platform,
    pub config: ImageConfig,
    pub env: EnvList,
    /// ARGs declared in scope, in order, with their values.
    pub build_args: Vec<(String, Option<String>)>,
    pub parent: Option<String>,
    pub parent_key: String,
    pub history: Vec<HistoryItem>,
    pub cmd_set: bool,
    pub author: Option<String>,
    pub no_cache: bool,
    pub step_count: usize,
}

impl StageBuild {
    fn meta(&mut self, line: usize, created_by: String, change: ConfigChange) {
        self.config.apply(&change);
        self.history.push(HistoryItem {
            created_by,
            empty_layer: true,
            step: None,
            change: Some(change),
            line,
        });
    }

    pub(super) fn exec(&self) -> ExecContext {
        ExecContext {
            env: self.env.rendered().strings.clone(),
            user: self.config.user.clone(),
            workdir: if self.config.working_dir.is_empty() {
                "/".to_string()
            } else {
                self.config.working_dir.clone()
            },
            shell: self.config.shell_or_default(),
        }
    }

    fn with_shell(&self, args: &[String]) -> Vec<String> {
        let mut argv = self.config.shell_or_default();
        argv.push(args.join(" "));
        argv
    }

    /// ARG values in scope, as the RUN environment and cache key see them.
    fn arg_values(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, v) in &self.build_args {
            let value = self
                .env
                .get(k)
                .map(str::to_string)
                .or_else(|| v.clone())
                .unwrap_or_default();
            out.insert(k.clone(), value);
        }
        out
    }

    /// BuildKit's `runCommandString`: `|N K=V ... argv`.
    fn run_command_string(&self, argv: &[String]) -> String {
        let mut seen: Vec<(String, String)> = Vec::new();
        for (k, v) in &self.build_args {
            let value = self
                .env
                .get(k)
                .map(str::to_string)
                .or_else(|| v.clone())
                .unwrap_or_default();
            match seen.iter_mut().find(|(sk, _)| sk == k) {
                Some(slot) => slot.1 = value,
                None => seen.push((k.clone(), value)),
            }
        }
        let mut parts: Vec<String> = Vec::new();
        if !seen.is_empty() {
            parts.push(format!("|{}", seen.len()));
            parts.extend(seen.into_iter().map(|(k, v)| format!("{k}={v}")));
        }
        parts.extend(argv.iter().cloned());
        parts.join(" ")
    }
}

/// `path.Clean` of an absolute path.
pub(crate) fn clean_abs(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            x => parts.push(x),
        }
    }
    format!("/{}", parts.join("/"))
}

fn valid_signal(s: &str) -> bool {
    const NAMES: [&str; 31] = [
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "WINCH",
    ];
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    if NAMES.contains(&name) || name == "XCPU" || name == "XFSZ" || name == "VTALRM" {
        return true;
    }
    name.strip_prefix("RTMIN")
        .or_else(|| name.strip_prefix("RTMAX"))
        .is_some_and(|rest| {
            rest.is_empty()
                || rest
                    .strip_prefix(['+', '-'])
                    .is_some_and(|n| n.parse::<u32>().is_ok())
        })
}

impl Planner<'_> {
    fn expand_list(
        &self,
        words: &[String],
        env: &EnvList,
        line: usize,
    ) -> Result<Vec<String>, PlanError> {
        words.iter().map(|w| self.expand(w, env, line)).collect()
    }

    /// Expands a word and records which ARGs it used.
    pub(super) fn expand_tracking(
        &self,
        st: &StageBuild,
        word: &str,
        used: &mut BTreeMap<String, String>,
        line: usize,
    ) -> Result<String, PlanError> {
        let e = self
            .lexer
            .process_word(word, &st.env)
            .map_err(|e| PlanError::at(line, e.to_string()))?;
        for name in &e.matched {
            if st.build_args.iter().any(|(k, _)| k == name) {
                used.insert(
                    name.clone(),
                    st.env.get(name).unwrap_or_default().to_string(),
                );
            }
        }
        Ok(e.value)
    }

    pub(crate) fn dispatch_instruction(
        &mut self,
        st: &mut StageBuild,
        ins: &Instruction,
    ) -> Result<(), PlanError> {
        let line = ins.start_line;
        match &ins.command {
            Command::Env(kvs) | Command::Label(kvs) => {
                let is_env = matches!(ins.command, Command::Env(_));
                let mut pairs = Vec::with_capacity(kvs.len());
                for kv in kvs {
                    pairs.push((
                        self.expand(&kv.key, &st.env, line)?,
                        self.expand(&kv.value, &st.env, line)?,
                    ));
                }
                let added: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
                self.spend(added, line)?;
                let mut text = String::from(if is_env { "ENV" } else { "LABEL" });
                for (k, v) in &pairs {
                    text.push_str(&format!(" {k}={v}"));
                    if is_env {
                        st.env.set(k, v);
                    }
                }
                let change = if is_env {
                    ConfigChange::Env(pairs)
                } else {
                    ConfigChange::Label(pairs)
                };
                st.meta(line, text, change);
            }
            Command::Maintainer(m) => {
                st.author = Some(m.clone());
                st.meta(
                    line,
                    format!("MAINTAINER {m}"),
                    ConfigChange::Maintainer(m.clone()),
                );
            }
            Command::User(u) => {
                let u = self.expand(u, &st.env, line)?;
                st.meta(line, format!("USER {u}"), ConfigChange::User(u));
            }
            Command::Volume(v) => {
                let vols = self.expand_list(v, &st.env, line)?;
                if vols.iter().any(String::is_empty) {
                    return Err(PlanError::at(
                        line,
                        "VOLUME specified can not be an empty string",
                    ));
                }
                st.meta(
                    line,
                    format!("VOLUME {}", go_list(&vols)),
                    ConfigChange::Volume(vols),
                );
            }
            Command::Stopsignal(s) => {
                let s = self.expand(s, &st.env, line)?;
                if !valid_signal(&s) {
                    return Err(PlanError::at(
                        line,
                        format!("STOPSIGNAL: invalid signal \"{s}\""),
                    ));
                }
                st.meta(line, format!("STOPSIGNAL {s}"), ConfigChange::StopSignal(s));
            }
            Command::Expose(ports) => {
                let mut specs = Vec::new();
                for p in ports {
                    let words = self
                        .lexer
                        .process_words(p, &st.env)
                        .map_err(|e| PlanError::at(line, e.to_string()))?;
                    for w in words {
                        specs.extend(parse_ports(&w).map_err(|e| PlanError::at(line, e))?);
                    }
                }
                st.meta(
                    line,
                    format!("EXPOSE {}", go_list(&specs)),
                    ConfigChange::Expose(specs),
                );
            }
            Command::Cmd(cl) => {
                let args = if cl.prepend_shell {
                    st.with_shell(&cl.args)
                } else {
                    cl.args.clone()
                };
                st.cmd_set = true;
                st.meta(
                    line,
                    format!("CMD {}", go_quoted_list(&args)),
                    ConfigChange::Cmd(args),
                );
            }
            Command::Entrypoint(cl) => {
                let args = if cl.prepend_shell {
                    st.with_shell(&cl.args)
                } else {
                    cl.args.clone()
                };
                let reset_cmd = !st.cmd_set;
                st.meta(
                    line,
                    format!("ENTRYPOINT {}", go_quoted_list(&args)),
                    ConfigChange::Entrypoint { args, reset_cmd },
                );
            }
            Command::Healthcheck(h) => {
                let hc = HealthConfig::from(h);
                st.meta(
                    line,
                    format!("HEALTHCHECK {}", hc.go_repr()),
                    ConfigChange::Healthcheck(hc),
                );
            }
            Command::Shell(s) => {
                st.meta(
                    line,
                    format!("SHELL {}", go_list(s)),
                    ConfigChange::Shell(s.clone()),
                );
            }
            Command::Onbuild(expr) => st.config.apply(&ConfigChange::OnBuild(expr.clone())),
            Command::Arg(defs) => self.dispatch_arg(st, defs, line)?,
            Command::Workdir(p) => self.dispatch_workdir(st, p, ins)?,
            Command::Run(r) => self.dispatch_run(st, r, ins)?,
            Command::Copy(c) => self.dispatch_copy(st, c, ins, false)?,
            Command::Add(c) => self.dispatch_copy(st, c, ins, true)?,
            Command::From(_) => return Err(PlanError::at(line, "FROM inside a stage")),
        }
        Ok(())
    }

    fn dispatch_arg(
        &mut self,
        st: &mut StageBuild,
        defs: &[crate::instructions::ArgDef],
        line: usize,
    ) -> Result<(), PlanError> {
        let mut parts = Vec::new();
        for def in defs {
            let given = self.opts.build_args.get(&def.key).cloned();
            if given.is_some() {
                self.consumed.insert(def.key.clone());
            }
            let value = match (given, &def.value) {
                (Some(v), _) => Some(v),
                (None, Some(d)) => Some(self.expand(d, &st.env, line)?),
                (None, None) => self.global_args.get(&def.key).map(str::to_string),
            };
            if let Some(v) = &value {
                st.env.set(&def.key, v);
            }
            parts.push(match &value {
                Some(v) => format!("{}={v}", def.key),
                None => def.key.clone(),
            });
            st.build_args.push((def.key.clone(), value));
        }
        st.history.push(HistoryItem {
            created_by: format!("ARG {}", parts.join(" ")),
            empty_layer: true,
            step: None,
            change: Some(ConfigChange::None),
            line,
        });
        Ok(())
    }

    fn dispatch_workdir(
        &mut self,
        st: &mut StageBuild,
        path: &str,
        ins: &Instruction,
    ) -> Result<(), PlanError> {
        let line = ins.start_line;
        let mut used = BTreeMap::new();
        let p = self.expand_tracking(st, path, &mut used, line)?;
        let current = if st.config.working_dir.is_empty() {
            "/"
        } else {
            st.config.working_dir.as_str()
        };
        let wd = if p.starts_with('/') {
            clean_abs(&p)
        } else {
            clean_abs(&format!("{current}/{p}"))
        };
        let change = ConfigChange::Workdir(wd.clone());
        if wd == "/" {
            st.meta(line, format!("WORKDIR {wd}"), change);
            return Ok(());
        }
        st.config.apply(&change);
        let action = Action::Mkdir {
            path: wd.clone(),
            user: st.config.user.clone(),
        };
        let id = self.push_step(
            st,
            StepKind::Workdir,
            ins,
            action,
            used,
            Vec::new(),
            Vec::new(),
            format!("WORKDIR {wd}"),
        )?;
        if let Some(h) = st.history.last_mut() {
            h.change = Some(ConfigChange::Workdir(wd));
            debug_assert_eq!(h.step.as_deref(), Some(id.as_str()));
        }
        Ok(())
    }

    fn run_argv(
        &self,
        st: &StageBuild,
        cl: &CommandLine,
        line: usize,
    ) -> Result<(Vec<String>, Vec<InlineMount>), PlanError> {
        let mut args = cl.args.clone();
        let mut inline = Vec::new();
        if !cl.files.is_empty() {
            if args.len() != 1 || !cl.prepend_shell {
                return Err(PlanError::at(
                    line,
                    format!("parsing produced an invalid run command: {args:?}"),
                ));
            }
            let is_doc = parse_heredoc(&args[0])
                .map_err(|e| PlanError::at(line, e))?
                .is_some();
            if is_doc {
                let f = &cl.files[0];
                let data = if f.chomp {
                    crate::parser::chomp_heredoc_content(&f.data)
                } else {
                    f.data.clone()
                };
                if data.starts_with("#!") {
                    let path = format!("/dev/pipes/{}", f.name);
                    inline.push(InlineMount {
                        path: path.clone(),
                        data,
                        mode: 0o755,
                    });
                    args = vec![path];
                } else {
                    args = vec![data];
                }
            } else {
                let mut b = args[0].clone();
                for f in &cl.files {
                    b.push('\n');
                    b.push_str(&f.data);
                    b.push_str(&f.name);
                }
                args = vec![b];
            }
        }
        let argv = if cl.prepend_shell {
            st.with_shell(&args)
        } else {
            args
        };
        Ok((argv, inline))
    }

    fn dispatch_run(
        &mut self,
        st: &mut StageBuild,
        r: &Run,
        ins: &Instruction,
    ) -> Result<(), PlanError> {
        let line = ins.start_line;
        let (argv, inline_files) = self.run_argv(st, &r.command, line)?;
        let mut mounts = Vec::new();
        let mut reads = Vec::new();
        let mut images = Vec::new();
        for m in &r.mounts {
            let env = st.env.clone();
            let spec = parse_mount(m, &mut |v| {
                self.expand(v, &env, line).map_err(|e| e.message)
            })
            .map_err(|e| PlanError::at(line, e))?;
            let source = if spec.from.is_empty() {
                None
            } else {
                Some(
                    match self.resolve_from(&spec.from, "--mount from", st.index, line)? {
                        Source::Stage(j) => {
                            reads.push(j);
                            CopyFrom::Stage { index: j }
                        }
                        Source::Image(r) => {
                            images.push(self.image_digest(
                                &r,
                                &st.platform,
                                "--mount from",
                                line,
                            )?);
                            CopyFrom::Image {
                                reference: r.to_string(),
                            }
                        }
                    },
                )
            };
            mounts.push(PlannedMount { spec, source });
        }
        let proxy_env: Vec<String> = self
            .opts
            .build_args
            .iter()
            .filter(|(k, _)| is_proxy_arg(k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let created_by = format!("RUN {} # buildkit", st.run_command_string(&argv));
        let action = Action::Run {
            argv,
            inline_files,
            mounts,
            network: r.network.clone(),
            security: r.security.clone(),
            proxy_env,
            extra_hosts: self.opts.extra_hosts.clone(),
        };
        let used = st.arg_values();
        self.push_step(
            st,
            StepKind::Run,
            ins,
            action,
            used,
            reads,
            images,
            created_by,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert!(valid_signal("SIGTERM") && valid_signal("9") && valid_signal("SIGRTMIN+3"));
        assert!(!valid_signal("SIGFOO") && !valid_signal("0"));
    }
}
