//! Helpers shared by the job tests: run a job collecting its output, and
//! flatten a layer chain from the worker's store.

use std::fs;
use strata_oci::layer::{UnpackOptions, unpack};
use strata_worker::job::{Job, JobError, JobOutcome, Worker};
use strata_worker::store::LayerRef;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Runs `j`, returning its outcome and everything it printed.
pub async fn exec(worker: &Worker, j: Job) -> Result<(JobOutcome, String), JobError> {
    let (tx, mut rx) = mpsc::channel::<strata_worker::job::Output>(64);
    let collect = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(c) = rx.recv().await {
            out.extend_from_slice(&c.data);
        }
        String::from_utf8_lossy(&out).into_owned()
    });
    let r = worker.run_job(j, tx, CancellationToken::new()).await;
    let out = collect.await.expect("collect");
    r.map(|o| (o, out))
}

/// Applies the layers' blobs in order onto a fresh directory, checking
/// each diffID.
pub fn flatten(worker: &Worker, layers: &[LayerRef]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for l in layers {
        let blob =
            fs::File::open(worker.store().blob_path(&l.digest).expect("path")).expect("blob");
        let report = unpack(blob, dir.path(), &UnpackOptions::default()).expect("unpack");
        assert_eq!(report.diff_id, l.diff_id);
    }
    dir
}
