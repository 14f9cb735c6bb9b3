//! `[discovery]`: where installations beyond the configured tables come from (a directory of
//! token files or a command), how their tokens are had, and how often all of it is looked at
//! again; and the [`Installation`] a discovered id becomes.

use std::time::Duration;

use toml::Spanned;

use super::raw::RawDiscovery;
use super::types::{Discovery, Installation, InstallationSource, TokenSource};
use super::validate::{Validator, parse_duration};

/// How often discovery looks again when `every` is not set.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(10 * 60);
/// Shorter would list every installation more often than any partner needs, at the cost of
/// the rate limit the rotations share.
const MIN_EVERY: Duration = Duration::from_secs(1);

pub(super) fn validate(
    v: &mut Validator,
    raw: &Spanned<RawDiscovery>,
    written: String,
) -> Option<Discovery> {
    let before = v.problems.len();
    let span = Some(raw.span());
    let raw = raw.get_ref();
    let command = |v: &mut Validator, key: &str, argv: &Option<Vec<String>>| {
        argv.as_ref()
            .and_then(|argv| super::provider::validate_command(v, key, span.clone(), argv))
    };
    let source = match (&raw.installations_dir, &raw.installations_command) {
        (Some(dir), None) if dir.is_absolute() => Some(InstallationSource::Dir(dir.clone())),
        (Some(dir), None) => {
            v.problem(
                span.clone(),
                "discovery.installations-dir",
                format!(
                    "\"{}\" is not an absolute path: the daemon's working directory is not yours",
                    dir.display()
                ),
            );
            None
        }
        (None, Some(_)) => command(
            v,
            "discovery.installations-command",
            &raw.installations_command,
        )
        .map(InstallationSource::Command),
        (Some(_), Some(_)) => {
            v.problem(
                span.clone(),
                "discovery",
                "set either installations-dir or installations-command, not both",
            );
            None
        }
        (None, None) => {
            v.problem(
                span.clone(),
                "discovery",
                "says nowhere to find installations: set installations-dir (a directory of <integrationConfigurationId>.token files) or installations-command",
            );
            None
        }
    };
    let token_command = command(v, "discovery.token-command", &raw.token_command);
    if matches!(source, Some(InstallationSource::Command(_))) && raw.token_command.is_none() {
        v.problem(
            span.clone(),
            "discovery.token-command",
            "is required with installations-command: the command names installations, and token-command gives each one's token",
        );
    }
    let every = match &raw.every {
        None => DEFAULT_EVERY,
        Some(text) => match parse_duration(text.get_ref()) {
            Ok(d) if d >= MIN_EVERY => d,
            Ok(_) => {
                v.problem(Some(text.span()), "discovery.every", "must be at least 1s");
                DEFAULT_EVERY
            }
            Err(why) => {
                v.problem(Some(text.span()), "discovery.every", why);
                DEFAULT_EVERY
            }
        },
    };
    if v.problems.len() > before {
        return None;
    }
    Some(Discovery {
        source: source?,
        token_command,
        every,
        written,
    })
}

impl Discovery {
    /// The installation a discovered id stands for: named by its id, its token from its
    /// `<id>.token` file in the directory, or from the token command when one is set.
    pub fn installation(&self, id: &str, token: TokenSource) -> Installation {
        Installation {
            name: id.to_owned(),
            id: id.to_owned(),
            token,
            // What the user wrote for it is the discovery table; the id sets it apart.
            written: format!("{{\"discovered\":{},\"id\":\"{id}\"}}", self.written),
        }
    }

    /// The installation `id` stands for when it is known from elsewhere than the source
    /// (an earlier run's inventory, a record): its token file in the directory, or the
    /// token command. `None` when neither can give its token.
    pub fn installation_by_id(&self, id: &str) -> Option<Installation> {
        let file = match &self.source {
            InstallationSource::Dir(dir) => Some(dir.join(format!("{id}.token"))),
            InstallationSource::Command(_) => None,
        };
        Some(self.installation(id, self.token_source(file)?))
    }

    /// The token source of a discovered installation whose token file (in a directory
    /// source) is `file`.
    pub fn token_source(&self, file: Option<std::path::PathBuf>) -> Option<TokenSource> {
        match (&self.token_command, file) {
            (Some(command), _) => Some(TokenSource::Command(command.clone())),
            (None, Some(file)) => Some(TokenSource::File(file)),
            (None, None) => None,
        }
    }
}
