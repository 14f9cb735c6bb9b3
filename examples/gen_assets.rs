//! The man page and shell completions the Debian package installs, generated from the clap
//! definition the binary parses with (`vercel_secret_rotator::cli::Cli`), so they cannot drift
//! from it. `.ci/run` runs it before `cargo deb`:
//!
//! ```text
//! cargo run --example gen_assets -- target/assets
//! ```
//!
//! writes, under the directory given:
//!
//! - `man/vercel-secret-rotator.1`: clap_mangen's title, NAME, SYNOPSIS, DESCRIPTION and
//!   OPTIONS; then COMMANDS, each command with its description and its own options (clap_mangen
//!   would only point at per-command pages that nothing installs); then the EXIT STATUS,
//!   ENVIRONMENT and FILES sections of `cli::MANUAL`, the text `--help` prints too; SEE ALSO.
//! - `completions/vercel-secret-rotator.bash`, `completions/_vercel-secret-rotator` (zsh) and
//!   `completions/vercel-secret-rotator.fish` (clap_complete).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, CommandFactory};
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Inline, Roff, bold, italic, roman};
use vercel_secret_rotator::cli::{Cli, MANUAL};

const BIN: &str = "vercel-secret-rotator";

fn main() -> std::io::Result<()> {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: cargo run --example gen_assets -- DIR");
        std::process::exit(2);
    };
    let man = write_man_page(&dir.join("man"))?;
    println!("{}", man.display());
    let completions = dir.join("completions");
    fs::create_dir_all(&completions)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut Cli::command(), BIN, &completions)?;
        println!("{}", path.display());
    }
    Ok(())
}

fn write_man_page(dir: &Path) -> std::io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let mut cmd = Cli::command();
    // Globals are propagated to the subcommands, and `help` becomes a subcommand, at build.
    cmd.build();
    let man = Man::new(cmd.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;

    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let own: Vec<&Arg> = sub
            .get_arguments()
            .filter(|a| !a.is_global_set() && !a.is_hide_set() && a.get_long().is_some())
            .filter(|a| !matches!(a.get_action(), ArgAction::Help | ArgAction::HelpLong))
            .collect();
        let mut synopsis = format!("{BIN} {}", sub.get_name());
        for arg in &own {
            synopsis.push_str(&format!(" [{}]", flag_with_value(arg)));
            if matches!(arg.get_action(), ArgAction::Append) {
                synopsis.push_str("...");
            }
        }
        roff.control("SS", [synopsis.as_str()]);
        let about = sub
            .get_long_about()
            .or_else(|| sub.get_about())
            .map(ToString::to_string)
            .unwrap_or_default();
        paragraphs(&mut roff, &about);
        for arg in own {
            roff.control("TP", []);
            let mut header = vec![bold(format!("--{}", arg.get_long().unwrap_or_default()))];
            if arg.get_action().takes_values() {
                header.push(roman(" "));
                header.push(italic(value_name(arg)));
            }
            roff.text(header);
            let help = arg
                .get_long_help()
                .or_else(|| arg.get_help())
                .map(ToString::to_string)
                .unwrap_or_default();
            roff.text([roman(help)]);
        }
    }
    for section in MANUAL {
        roff.control("SH", [section.heading]);
        for (term, body) in section.entries {
            roff.control("TP", []);
            roff.text([bold(*term)]);
            roff.text([roman(*body)]);
        }
    }
    roff.control("SH", ["SEE ALSO"]);
    let see_also: Vec<Inline> = vec![
        bold("systemctl"),
        roman("(1), "),
        bold("systemd.exec"),
        roman("(5), "),
        bold("journalctl"),
        roman("(1); the README and the commented example config in "),
        italic("/usr/share/doc/vercel-secret-rotator/"),
        roman("."),
    ];
    roff.text(see_also);
    roff.to_writer(&mut page)?;
    man.render_version_section(&mut page)?;

    let path = dir.join(format!("{BIN}.1"));
    fs::File::create(&path)?.write_all(&page)?;
    Ok(path)
}

/// Paragraphs (blank-line separated) as roff paragraphs.
fn paragraphs(roff: &mut Roff, text: &str) {
    for paragraph in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
        roff.control("PP", []);
        roff.text([roman(
            paragraph.split_whitespace().collect::<Vec<_>>().join(" "),
        )]);
    }
}

fn flag_with_value(arg: &Arg) -> String {
    let long = arg.get_long().unwrap_or_default();
    if arg.get_action().takes_values() {
        format!("--{long} {}", value_name(arg))
    } else {
        format!("--{long}")
    }
}

fn value_name(arg: &Arg) -> String {
    arg.get_value_names()
        .and_then(|names| names.first())
        .map_or_else(|| arg.get_id().as_str().to_uppercase(), ToString::to_string)
}
