//! Parse and plan a 1,000-instruction Dockerfile.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use strata_frontend::plan::{Offline, PlanOptions, plan_dockerfile};

/// A Dockerfile of `n` instructions across a few stages, mixing every kind
/// of instruction the planner handles.
fn big_dockerfile(n: usize) -> String {
    let mut df = String::from("ARG BASE=busybox:latest\nFROM ${BASE} AS base\nARG V=1\n");
    let mut count = 3;
    let mut stage = 0;
    while count < n {
        if count % 200 == 0 {
            stage += 1;
            df.push_str(&format!("FROM base AS s{stage}\n"));
        } else {
            match count % 6 {
                0 => df.push_str(&format!(
                    "RUN echo step {count} $V && \\\n    touch /f{count}\n"
                )),
                1 => df.push_str(&format!("ENV K{count}=\"value ${{V}} {count}\"\n")),
                2 => df.push_str(&format!("WORKDIR /w/{count}\n")),
                3 => df.push_str(&format!("LABEL l{count}=v{count}\n")),
                4 => df.push_str(&format!("RUN [\"sh\", \"-c\", \"echo {count}\"]\n")),
                _ => df.push_str(&format!("EXPOSE {}\n", 1000 + count)),
            }
        }
        count += 1;
    }
    df.push_str("FROM busybox\n");
    for s in 1..=stage {
        df.push_str(&format!("COPY --from=s{s} /w /w{s}\n"));
    }
    df
}

fn bench(c: &mut Criterion) {
    let df = big_dockerfile(1000);
    let opts = PlanOptions::default();
    c.bench_function("parse_and_plan_1000_instructions", |b| {
        b.iter(|| plan_dockerfile(black_box(df.as_bytes()), None, &opts, &Offline).expect("plans"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
