//! Which phases a run takes, from the skip, `--only` and `--from` flags.
//!
//! A pure function of the flags, so every command line the docs show can
//! be pinned to its phase list in a test.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::phase::PhaseId;
use crate::error::{Failure, Kind, Problem, fail};

/// The phase-selection flags as the user gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectionFlags {
    pub skip: BTreeSet<PhaseId>,
    pub only: Vec<PhaseId>,
    pub from: Option<PhaseId>,
}

/// Why a phase is not taken, for the report's `skipped` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// `--skip-<phase>` (or one of its aliases).
    Flag,
    /// `--only` did not name it.
    NotInOnly,
    /// It comes before the `--from` phase.
    BeforeFrom,
}

impl SkipReason {
    /// The flag that left a phase out, as a person would name it.
    pub fn words(self) -> &'static str {
        match self {
            SkipReason::Flag => "--skip-*",
            SkipReason::NotInOnly => "not in --only",
            SkipReason::BeforeFrom => "before --from",
        }
    }
}

/// The decision: for each phase in pipeline order, run or skip and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub phases: Vec<(PhaseId, Option<SkipReason>)>,
}

impl Selection {
    /// The phases that will run, in order.
    pub fn selected(&self) -> Vec<PhaseId> {
        self.phases
            .iter()
            .filter(|(_, skip)| skip.is_none())
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn is_selected(&self, id: PhaseId) -> bool {
        self.phases
            .iter()
            .any(|(p, skip)| *p == id && skip.is_none())
    }

    /// Why `id` is left out, if it is.
    pub fn skip_reason(&self, id: PhaseId) -> Option<SkipReason> {
        self.phases
            .iter()
            .find(|(p, _)| *p == id)
            .and_then(|(_, skip)| *skip)
    }

    /// Takes a skipped phase after all: a layer the run carries over
    /// (`pipeline::layers`) is deployed by its phase from a record.
    pub fn carry(&mut self, id: PhaseId) {
        for (p, reason) in self.phases.iter_mut() {
            if *p == id {
                *reason = None;
            }
        }
    }

    /// True when the user asked to skip validate explicitly: the one case
    /// that runs without checking the configuration first.
    pub fn validate_skipped(&self) -> bool {
        !self.is_selected(PhaseId::Validate)
    }
}

/// Every contradiction among the phase flags, each as a problem of the
/// command line: what a deploy names together with its other flags' (and
/// its configuration's) problems, in one refusal.
pub fn flag_problems(flags: &SelectionFlags) -> Vec<Problem> {
    let problem = |subject: String, problem: String, fix: &str| Problem {
        phase: None,
        subject,
        problem,
        fix: fix.to_string(),
    };
    let mut problems = Vec::new();
    if !flags.only.is_empty() && flags.from.is_some() {
        problems.push(problem(
            "--only and --from".into(),
            "cannot be combined: --only names the phases to run, --from resumes a run at a phase"
                .into(),
            "use one of them",
        ));
    }
    for (i, id) in flags.only.iter().enumerate() {
        // Said once, at its first mention: `--only migrate,database` is
        // one phase named twice, a slip the user should see.
        if flags.only[..i].contains(id) {
            continue;
        }
        if flags.only[i + 1..].contains(id) {
            let names: Vec<String> = clap::ValueEnum::to_possible_value(id)
                .map(|v| v.get_name_and_aliases().map(str::to_string).collect())
                .unwrap_or_default();
            problems.push(problem(
                "--only".into(),
                format!(
                    "names {id} more than once (its names: {})",
                    names.join(", ")
                ),
                "name each phase once",
            ));
        }
        if flags.skip.contains(id) {
            problems.push(problem(
                id.to_string(),
                format!("is both named by --only and skipped by {}", id.skip_flag()),
                "drop one of them",
            ));
        }
    }
    if let Some(from) = flags.from
        && flags.skip.contains(&from)
    {
        problems.push(problem(
            format!("--from {from}"),
            format!("resumes at a phase that {} skips", from.skip_flag()),
            "drop one of them",
        ));
    }
    problems
}

/// Decide the phase list.
///
/// `validate` changes nothing and guards everything after it, so it runs
/// before any selection (including `--only` and `--from`, which then name the
/// phases whose variables it checks) unless `--skip-validate` says otherwise.
pub fn select(flags: &SelectionFlags) -> anyhow::Result<Selection> {
    let problems = flag_problems(flags);
    if !problems.is_empty() {
        return Err(Failure::with_problems(
            Kind::Usage,
            "the phase flags contradict each other; nothing was changed",
            problems,
        )
        .into());
    }

    let phases: Vec<(PhaseId, Option<SkipReason>)> = PhaseId::ALL
        .iter()
        .map(|&id| {
            let reason = if flags.skip.contains(&id) {
                Some(SkipReason::Flag)
            } else if id == PhaseId::Validate {
                None
            } else if !flags.only.is_empty() && !flags.only.contains(&id) {
                Some(SkipReason::NotInOnly)
            } else if flags.from.is_some_and(|from| id < from) {
                Some(SkipReason::BeforeFrom)
            } else {
                None
            };
            (id, reason)
        })
        .collect();

    let selection = Selection { phases };
    let work = selection
        .selected()
        .into_iter()
        .filter(|&id| id != PhaseId::Validate || flags.only.contains(&id))
        .count();
    if work == 0 {
        return Err(fail(
            Kind::Usage,
            "these flags skip every phase, so there is nothing to do; drop a --skip flag, or use `maily-deploy validate ENV` to check the configuration alone",
        ));
    }
    Ok(selection)
}

#[cfg(test)]
mod tests {
    use super::*;
    use PhaseId::*;

    fn flags(skip: &[PhaseId], only: &[PhaseId], from: Option<PhaseId>) -> SelectionFlags {
        SelectionFlags {
            skip: skip.iter().copied().collect(),
            only: only.to_vec(),
            from,
        }
    }

    #[test]
    fn no_flags_runs_all_nine_in_order() {
        let s = select(&SelectionFlags::default()).unwrap();
        assert_eq!(s.selected(), PhaseId::ALL.to_vec());
    }

    #[test]
    fn only_keeps_pipeline_order_and_validate_first() {
        let s = select(&flags(&[], &[ShiftTraffic, Migrate], None)).unwrap();
        assert_eq!(s.selected(), vec![Validate, Migrate, ShiftTraffic]);
        assert_eq!(s.phases[1], (Provision, Some(SkipReason::NotInOnly)));
    }

    #[test]
    fn from_resumes_at_the_phase_after_validating() {
        let s = select(&flags(&[], &[], Some(Verify))).unwrap();
        assert_eq!(s.selected(), vec![Validate, Verify, ShiftTraffic]);
        assert_eq!(s.phases[3], (DeployBackend, Some(SkipReason::BeforeFrom)));
    }

    #[test]
    fn from_and_skip_combine() {
        let s = select(&flags(&[Monitor], &[], Some(DeployBackend))).unwrap();
        assert_eq!(
            s.selected(),
            vec![
                Validate,
                DeployBackend,
                DeployFrontend,
                ConfigureAi,
                Verify,
                ShiftTraffic
            ]
        );
    }

    #[test]
    fn skip_validate_is_honoured_even_with_only() {
        let s = select(&flags(&[Validate], &[Migrate], None)).unwrap();
        assert_eq!(s.selected(), vec![Migrate]);
        assert!(s.validate_skipped());
    }

    #[test]
    fn only_validate_is_a_run_of_validate_alone() {
        let s = select(&flags(&[], &[Validate], None)).unwrap();
        assert_eq!(s.selected(), vec![Validate]);
    }

    /// Each problem as the refusal prints it: subject, then what is wrong.
    fn said(flags: &SelectionFlags) -> Vec<String> {
        flag_problems(flags)
            .iter()
            .map(|p| format!("{} {}", p.subject, p.problem))
            .collect()
    }

    #[test]
    fn contradictions_are_usage_errors_listing_each() {
        let both = flags(&[Migrate, Verify], &[Migrate, Verify], None);
        assert_eq!(
            said(&both),
            vec![
                "migrate is both named by --only and skipped by --skip-migrate",
                "verify is both named by --only and skipped by --skip-verify",
            ]
        );
        let err = select(&both).unwrap_err();
        assert_eq!(crate::error::kind_of(&err), Some(Kind::Usage));
        assert_eq!(
            crate::error::failure_of(&err).map(|f| f.problems.len()),
            Some(2)
        );

        assert_eq!(
            said(&flags(&[], &[Migrate], Some(Verify))),
            vec![
                "--only and --from cannot be combined: --only names the phases to run, --from resumes a run at a phase"
            ]
        );
        assert_eq!(
            said(&flags(&[Verify], &[], Some(Verify))),
            vec!["--from verify resumes at a phase that --skip-verify skips"]
        );
    }

    #[test]
    fn a_phase_named_twice_by_only_is_refused_once() {
        assert_eq!(
            said(&flags(&[], &[Migrate, Verify, Migrate, Migrate], None)),
            vec!["--only names migrate more than once (its names: migrate, database)"]
        );
    }

    #[test]
    fn skipping_everything_is_refused() {
        let all_but_validate: Vec<PhaseId> = PhaseId::ALL[1..].to_vec();
        let err = select(&flags(&all_but_validate, &[], None)).unwrap_err();
        assert!(err.to_string().contains("nothing to do"));
    }
}
