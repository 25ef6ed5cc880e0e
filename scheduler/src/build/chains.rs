//! Layer chains: which layers a step starts from and a stage ends with,
//! given what the build has produced so far.

use crate::image::LayerInfo;
use std::collections::BTreeMap;
use strata_frontend::plan::{BaseRef, BuildPlan};

/// Layer chains of what a build has produced so far.
pub(super) struct Chains<'a> {
    pub(super) plan: &'a BuildPlan,
    pub(super) steps: BTreeMap<String, LayerInfo>,
    pub(super) images: BTreeMap<String, Vec<LayerInfo>>,
}

impl Chains<'_> {
    /// Layers of a stage's final filesystem, with the step that made each
    /// (`None` for base-image layers).
    pub(super) fn stage(&self, stage: usize) -> Result<Vec<(Option<String>, LayerInfo)>, String> {
        let s = self
            .plan
            .stages
            .iter()
            .find(|s| s.index == stage)
            .ok_or_else(|| format!("stage {stage} is not planned"))?;
        self.from(stage, s.last_step.as_deref())
    }

    /// The chain a step starts from: its parent step's chain including the
    /// parent, or the stage base's.
    pub(super) fn from(
        &self,
        stage: usize,
        parent: Option<&str>,
    ) -> Result<Vec<(Option<String>, LayerInfo)>, String> {
        let Some(parent) = parent else {
            let s = self
                .plan
                .stages
                .iter()
                .find(|s| s.index == stage)
                .ok_or_else(|| format!("stage {stage} is not planned"))?;
            return match &s.base_ref {
                BaseRef::Scratch => Ok(Vec::new()),
                BaseRef::Stage { index } => self.stage(*index),
                BaseRef::Image { reference, .. } => self
                    .images
                    .get(reference)
                    .map(|l| l.iter().map(|l| (None, l.clone())).collect())
                    .ok_or_else(|| format!("base image {reference} was not resolved")),
            };
        };
        let step = self
            .plan
            .step(parent)
            .ok_or_else(|| format!("step {parent} is not planned"))?;
        let mut chain = self.from(step.stage, step.parent.as_deref())?;
        let layer = self
            .steps
            .get(parent)
            .cloned()
            .ok_or_else(|| format!("step {parent} has not run"))?;
        chain.push((Some(parent.to_string()), layer));
        Ok(chain)
    }

    pub(super) fn layers(chain: Vec<(Option<String>, LayerInfo)>) -> Vec<LayerInfo> {
        chain.into_iter().map(|(_, l)| l).collect()
    }
}
