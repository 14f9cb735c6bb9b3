//! What a batch of rotations did, for a person: the `run --once` summary table (also the
//! answer to a `run --once` handed to the daemon) and a dry run's previews.

use std::io::Write;

use crate::exit;
use crate::rotation::{Rotated, RotationReport};

/// The exit status a batch gives `run --once`, directly or through the daemon: 1 when any
/// rotation failed.
pub fn exit_status(reports: &[RotationReport]) -> u8 {
    if reports.iter().any(|r| r.result.is_err()) {
        exit::ROTATION_FAILED
    } else {
        exit::OK
    }
}

/// Prints the summary table (and each failure's full reason below it).
pub fn print_summary(out: &mut impl Write, reports: &[RotationReport]) -> std::io::Result<()> {
    let rows: Vec<[String; 5]> = reports
        .iter()
        .map(|r| {
            let (outcome, fingerprint) = match &r.result {
                Ok(Rotated::Pushed { fingerprint, .. }) => {
                    ("rotated".to_owned(), fingerprint.clone())
                }
                Ok(Rotated::DryRun { .. }) => ("dry run".to_owned(), "-".to_owned()),
                Err(e) if crate::error::Classify::is_transient(e) => {
                    ("FAILED (transient)".to_owned(), "-".to_owned())
                }
                Err(_) => ("FAILED (permanent)".to_owned(), "-".to_owned()),
            };
            [
                r.target.policy.clone(),
                r.target.resource.clone(),
                outcome,
                r.secret_names.join(","),
                fingerprint,
            ]
        })
        .collect();
    let header = ["POLICY", "RESOURCE", "OUTCOME", "SECRETS", "FINGERPRINT"];
    crate::table::write(out, header, &rows)?;
    let failed: Vec<&RotationReport> = reports.iter().filter(|r| r.result.is_err()).collect();
    let rotated = reports
        .iter()
        .filter(|r| matches!(r.result, Ok(Rotated::Pushed { .. })))
        .count();
    writeln!(out)?;
    let dry = reports
        .iter()
        .filter(|r| matches!(r.result, Ok(Rotated::DryRun { .. })))
        .count();
    if dry > 0 {
        writeln!(
            out,
            "dry run: {dry} would be rotated, {} failed; nothing was sent",
            failed.len()
        )?;
    } else {
        writeln!(
            out,
            "{rotated} rotated, {} failed, {} in all",
            failed.len(),
            reports.len()
        )?;
    }
    for r in &failed {
        if let Err(e) = &r.result {
            writeln!(out, "  {}/{}: {e}", r.target.policy, r.target.resource)?;
        }
    }
    for r in reports {
        match &r.result {
            Ok(Rotated::Pushed {
                retire_at: Some(retire_at),
                ..
            }) => writeln!(
                out,
                "  {}/{}: redeploy connected projects before {}, when the old credential is retired",
                r.target.policy,
                r.target.resource,
                retire_at.format("%Y-%m-%d %H:%M UTC")
            )?,
            // A first rotation replaced nothing of ours: no deadline to promise.
            Ok(Rotated::Pushed {
                retire_at: None, ..
            }) => writeln!(
                out,
                "  {}/{}: redeploy connected projects to use the new values (first rotation: no earlier credential is retired)",
                r.target.policy, r.target.resource,
            )?,
            _ => {}
        }
    }
    Ok(())
}

/// Prints each dry run's would-be request.
pub fn print_previews(out: &mut impl Write, reports: &[RotationReport]) -> std::io::Result<()> {
    for r in reports {
        if let Ok(Rotated::DryRun {
            request_line,
            preview,
        }) = &r.result
        {
            writeln!(
                out,
                "{}/{} would send (installation {}, values redacted):\n{request_line}\n{preview}\n",
                r.target.policy, r.target.resource, r.target.installation
            )?;
        }
    }
    Ok(())
}
