//! Every exit code `maily-deploy` can return, in one place.
//!
//! Scripts and CI jobs branch on these numbers, so they are API: each has a
//! name, a doc comment saying when it happens, a row in the README, and a test
//! that pins it to its cause. Anything unexpected is [`FAILURE`].

/// The command did what was asked (for `--dry-run`: every phase could plan;
/// for `diff`: nothing would change).
pub const SUCCESS: i32 = 0;
/// An unexpected error: a bug, or a failure no other code describes.
pub const FAILURE: i32 = 1;
/// The command line is wrong: unknown flag, missing argument, a malformed
/// deployment id, a `rollback` target that is not kept (or no `previous`
/// one), contradictory phase selection. Nothing was changed.
pub const USAGE: i32 = 2;
/// The configuration is wrong: a missing or malformed variable, an env file
/// or profile that cannot be read (or is not UTF-8), an unknown environment,
/// a broken environment profile, a rollback target whose snapshot cannot be
/// read, an image that cannot be pinned to a digest, a scan finding at the
/// threshold. Every problem found is reported. Nothing was changed.
pub const CONFIG: i32 = 3;
/// A phase failed after the run had changed something, and what users can
/// see was put back (or nothing they can see had changed); a configuration's
/// problem met only after a change is one too. A failure before the first
/// change is [`USAGE`], [`CONFIG`], [`REFUSED`] or [`UNREACHABLE`] instead.
pub const PHASE_FAILED_ROLLED_BACK: i32 = 4;
/// A phase failed and putting things back failed too, or the run lost its
/// lock mid-run (taken over, removed, or run out while the API server did
/// not answer) and so put nothing back: the platform needs a person. The
/// message says what is left where.
pub const ROLLBACK_FAILED: i32 = 5;
/// Another run holds this environment's deploy lock.
pub const LOCK_HELD: i32 = 6;
/// Reserved: no version returns it today. It stays taken, for a future
/// version's phase that is in the pipeline but not built yet (a run that
/// would reach one refuses before it changes anything), so that scripts
/// branching on 7 never meet another meaning for it.
pub const NOT_IMPLEMENTED: i32 = 7;
/// A phase failed and `--no-rollback` left everything as the failure found
/// it: users may be on a half-switched platform; the message says where.
pub const PHASE_FAILED_NOT_ROLLED_BACK: i32 = 8;
/// A system the run needs could not be reached, or refused the tool's
/// credentials, before anything changed: the Kubernetes API server (the
/// message says what kubectl would: the server, the context, connection
/// refused, no such host, the TLS failure). Worth a retry once it answers.
pub const UNREACHABLE: i32 = 9;
/// The run stopped before its first change: a check refused the release
/// (the server's dry run rejects an object, it does not fit the namespace's
/// ResourceQuota, a CRD it needs is missing, the AI providers refuse a key)
/// or a dry run could not plan. Nothing was changed.
pub const REFUSED: i32 = 10;
/// `diff` only: the deploy would change something (1 is [`FAILURE`] for
/// every other command; `diff(1)` and `kubectl diff` say "differences"
/// with it, and CI review steps branch on that).
pub const DIFF_CHANGES: i32 = 1;
/// `diff` only: an unexpected error, which other commands report as
/// [`FAILURE`]: for `diff`, 1 means changes, so an error must not say 1.
pub const DIFF_ERROR: i32 = 11;
/// The run was interrupted (SIGINT, SIGTERM) and put things back before
/// exiting.
pub const INTERRUPTED: i32 = 130;

/// All codes with their names, for the README table and its test.
pub const ALL: &[(i32, &str)] = &[
    (SUCCESS, "SUCCESS"),
    (FAILURE, "FAILURE"),
    (USAGE, "USAGE"),
    (CONFIG, "CONFIG"),
    (PHASE_FAILED_ROLLED_BACK, "PHASE_FAILED_ROLLED_BACK"),
    (ROLLBACK_FAILED, "ROLLBACK_FAILED"),
    (LOCK_HELD, "LOCK_HELD"),
    (NOT_IMPLEMENTED, "NOT_IMPLEMENTED"),
    (PHASE_FAILED_NOT_ROLLED_BACK, "PHASE_FAILED_NOT_ROLLED_BACK"),
    (UNREACHABLE, "UNREACHABLE"),
    (REFUSED, "REFUSED"),
    (DIFF_ERROR, "DIFF_ERROR"),
    (INTERRUPTED, "INTERRUPTED"),
];
