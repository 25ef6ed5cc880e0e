//! Layer packing throughput, stage by stage, on a tree of 256 MiB of random
//! data, 256 MiB of zeros and 20,000 small files (generated once into a
//! temporary directory, removed at the end).
//!
//! Stages: walking and diffing the tree, writing the tar (reading the files
//! from the page cache), compressing the tar with zstd and gzip, hashing
//! it, and the whole pipeline as `write_layer_from_trees` runs it. Every
//! stage reports MB/s of tree content (criterion's "thrpt"). Then the way
//! back: unpacking the (uncompressed) tar of the 20,000 small files alone
//! into a fresh directory, in files per second. Then zstd in independent
//! frames (strata's) against zstd's own multi-threaded mode, and how
//! compression scales with threads.
//!
//! `cargo bench -p strata-oci --bench layer_pack`

use std::fs;
use std::hint::black_box;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use sha2::{Digest, Sha256};
use strata_oci::layer::{
    Change, Compression, Compressor, LayerOptions, UnpackOptions, ZSTD_FRAME_SIZE, diff_trees,
    unpack, write_layer_from_trees, write_tar,
};

const BIG: usize = 256 << 20;
const SMALL_FILES: usize = 20_000;

struct Corpus {
    _dir: tempfile::TempDir,
    lower: PathBuf,
    new: PathBuf,
    content_bytes: u64,
}

/// xorshift64*: fast, reproducible "random" bytes.
fn fill_random(buf: &mut [u8], seed: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *seed ^= *seed >> 12;
        *seed ^= *seed << 25;
        *seed ^= *seed >> 27;
        let v = seed.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

impl Corpus {
    fn generate() -> io::Result<Corpus> {
        let dir = tempfile::Builder::new()
            .prefix("strata-layer-bench")
            .tempdir()?;
        let lower = dir.path().join("lower");
        let new = dir.path().join("new");
        fs::create_dir_all(&lower)?;
        fs::create_dir_all(new.join("data"))?;
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut content_bytes = 0u64;

        let mut chunk = vec![0u8; 1 << 20];
        let mut random = fs::File::create(new.join("data/random.bin"))?;
        for _ in 0..BIG / chunk.len() {
            fill_random(&mut chunk, &mut seed);
            random.write_all(&chunk)?;
        }
        let zero = vec![0u8; 1 << 20];
        let mut zeros = fs::File::create(new.join("data/zeros.bin"))?;
        for _ in 0..BIG / zero.len() {
            zeros.write_all(&zero)?;
        }
        content_bytes += 2 * BIG as u64;

        // Small text-like files, 100 B to 4 KiB, 100 per directory.
        let words: Vec<&str> = "layer tar zstd gzip overlay upper lower whiteout digest blob"
            .split(' ')
            .collect();
        for i in 0..SMALL_FILES {
            let d = new.join(format!("src/d{:03}", i / 100));
            if i % 100 == 0 {
                fs::create_dir_all(&d)?;
            }
            let mut r = [0u8; 8];
            fill_random(&mut r, &mut seed);
            let len = 100 + (u64::from_le_bytes(r) % 4000) as usize;
            let mut text = String::with_capacity(len + 16);
            let mut k = i;
            while text.len() < len {
                text.push_str(words[k % words.len()]);
                text.push(if k % 7 == 0 { '\n' } else { ' ' });
                k = k.wrapping_mul(31).wrapping_add(7);
            }
            text.truncate(len);
            fs::write(d.join(format!("f{i:05}.txt")), &text)?;
            content_bytes += len as u64;
        }
        Ok(Corpus {
            _dir: dir,
            lower,
            new,
            content_bytes,
        })
    }
}

fn tar_bytes(changes: &[Change], opts: &LayerOptions) -> Vec<u8> {
    let (tar, _) = write_tar(changes, Vec::with_capacity(600 << 20), opts).expect("tar");
    tar
}

fn compress(tar: &[u8], compression: Compression, threads: usize) -> u64 {
    let mut counter = Counter(0);
    let mut c = Compressor::new(&mut counter, compression, threads).expect("compressor");
    for chunk in tar.chunks(1 << 20) {
        c.write_all(chunk).expect("compress");
    }
    c.finish().expect("finish");
    counter.0
}

/// zstd level 3 in zstd's own multi-threaded mode, `threads` workers with
/// jobs of `job_size` bytes (0: zstd's default); the output size.
fn zstd_with_job_size(input: &[u8], threads: usize, job_size: u32) -> u64 {
    let mut counter = Counter(0);
    let mut e = zstd::stream::write::Encoder::new(&mut counter, 3).expect("encoder");
    e.multithread(threads as u32).expect("workers");
    if job_size > 0 {
        e.set_parameter(zstd::zstd_safe::CParameter::JobSize(job_size))
            .expect("job size");
    }
    e.include_checksum(true).expect("checksum");
    for chunk in input.chunks(1 << 20) {
        e.write_all(chunk).expect("compress");
    }
    e.finish().expect("finish");
    counter.0
}

/// A directory removed when dropped.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Counts what it is given, like a writer to a fast disk would.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn bench(c: &mut Criterion, corpus: &Corpus) {
    let opts = LayerOptions::default();
    let threads = opts.effective_threads();
    let changes = diff_trees(&corpus.lower, &corpus.new, &opts).expect("diff");
    let tar = tar_bytes(&changes, &opts);
    eprintln!(
        "corpus: {} MiB of content in {} entries, tar {} MiB, {threads} compression threads",
        corpus.content_bytes >> 20,
        changes.len(),
        tar.len() >> 20
    );
    for (name, comp) in [("zstd-3", Compression::ZSTD), ("gzip-6", Compression::GZIP)] {
        let out = compress(&tar, comp, threads);
        eprintln!(
            "{name}: {} MiB -> {} MiB ({:.1}%)",
            tar.len() >> 20,
            out >> 20,
            100.0 * out as f64 / tar.len() as f64
        );
    }

    let mut g = c.benchmark_group("layer_pack");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(corpus.content_bytes));

    g.bench_function("diff_walk", |b| {
        b.iter(|| black_box(diff_trees(&corpus.lower, &corpus.new, &opts).expect("diff")))
    });
    g.bench_function("tar", |b| {
        b.iter(|| black_box(write_tar(&changes, Counter(0), &opts).expect("tar").1))
    });
    g.bench_function("sha256", |b| b.iter(|| black_box(Sha256::digest(&tar))));
    g.bench_function("compress_zstd3", |b| {
        b.iter(|| black_box(compress(&tar, Compression::ZSTD, threads)))
    });
    g.bench_function("compress_gzip6", |b| {
        b.iter(|| black_box(compress(&tar, Compression::GZIP, threads)))
    });
    g.bench_function("end_to_end_zstd3", |b| {
        b.iter(|| {
            black_box(
                write_layer_from_trees(
                    &corpus.lower,
                    &corpus.new,
                    Counter(0),
                    Compression::ZSTD,
                    &opts,
                )
                .expect("layer"),
            )
        })
    });
    g.finish();

    // Unpacking many small files: per-file costs, not bytes, dominate.
    let small: Vec<Change> = changes
        .iter()
        .filter(|c| !c.path.starts_with("data"))
        .cloned()
        .collect();
    let small_tar = tar_bytes(&small, &opts);
    let scratch = tempfile::Builder::new()
        .prefix("strata-unpack-bench")
        .tempdir()
        .expect("scratch dir");
    let mut g = c.benchmark_group("layer_unpack");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(SMALL_FILES as u64));
    let mut round = 0u64;
    g.bench_function("small_files", |b| {
        b.iter_batched(
            || {
                round += 1;
                let dir = scratch.path().join(format!("r{round}"));
                fs::create_dir_all(&dir).expect("dir");
                dir
            },
            |dir| {
                black_box(unpack(&small_tar[..], &dir, &UnpackOptions::default()).expect("unpack"));
                // Removed after the clock stops (criterion drops outputs
                // outside the measurement).
                Removed(dir)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();

    // zstd in independent 4 MiB frames (what `Compressor` writes) against
    // zstd's own multi-threaded mode with 4 MiB jobs (what it wrote up to
    // session 10, whose output could change with timing), on 32 MiB of
    // random bytes (zstd stores them) and on the small files' tar (text).
    let random = fs::read(corpus.new.join("data/random.bin")).expect("random data");
    let inputs = [
        ("random_32MiB", &random[..32 << 20]),
        ("text", &small_tar[..]),
    ];
    let job = u32::try_from(ZSTD_FRAME_SIZE).expect("frame size");
    for (name, input) in inputs {
        eprintln!(
            "zstd_framing {name}: {} -> {} bytes (frames), {} bytes (zstd workers)",
            input.len(),
            compress(input, Compression::ZSTD, threads),
            zstd_with_job_size(input, threads, job)
        );
    }
    let mut g = c.benchmark_group("zstd_framing");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, input) in inputs {
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(format!("{name}/frames"), |b| {
            b.iter(|| black_box(compress(input, Compression::ZSTD, threads)))
        });
        g.bench_function(format!("{name}/zstd_workers"), |b| {
            b.iter(|| black_box(zstd_with_job_size(input, threads, job)))
        });
    }
    g.finish();

    // How compression scales with cores: the same tar with 1, 2, 4, ...
    // threads up to the machine's CPUs (the output bytes do not change).
    let mut g = c.benchmark_group("compress_threads");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(tar.len() as u64));
    let mut counts = vec![1];
    while counts[counts.len() - 1] * 2 <= threads {
        counts.push(counts[counts.len() - 1] * 2);
    }
    if counts[counts.len() - 1] != threads {
        counts.push(threads);
    }
    for t in counts {
        g.bench_function(format!("gzip6/{t}"), |b| {
            b.iter(|| black_box(compress(&tar, Compression::GZIP, t)))
        });
        g.bench_function(format!("zstd3/{t}"), |b| {
            b.iter(|| black_box(compress(&tar, Compression::ZSTD, t)))
        });
    }
    g.finish();
}

fn main() {
    let corpus = Corpus::generate().expect("generate the benchmark tree");
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &corpus);
    c.final_summary();
    drop(corpus);
}
