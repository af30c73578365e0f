//! Palisade's rule language: one TOML file is one rule set, one generation.
//!
//! [`parse`] turns the bytes of a rule file into a validated [`RuleSet`] or a
//! list of [`Diagnostic`]s, each naming `file:line:col` and a plain cause.
//! Every error of a file is reported in one run. Unknown keys are errors:
//! a typo must never silently widen a rule.
//!
//! ```
//! let text = br#"
//! version = 1
//! [[port]]
//! name = "lan1"
//! vlan = 10
//! [[acl]]
//! name = "lan-in"
//!   [[acl.rule]]
//!   action = "permit"
//!   proto = "udp"
//!   dst_port = 53
//! [[bind]]
//! acl = "lan-in"
//! port = "lan1"
//! "#;
//! let loaded = palisade_rules::parse("edge.toml", text).unwrap();
//! assert_eq!(loaded.ruleset.acls[0].rules.len(), 1);
//! assert_eq!(loaded.digest.to_string().len(), 64);
//! ```
//!
//! # The language, key by key
//!
//! Top level: `version = 1` (required; any other value is refused),
//! `requires` (a semver requirement on this engine, Cargo syntax: `">=0.1"`,
//! `"^0.1"`, `"~0.1.2"`, `">=0.1, <0.3"`, `"0.1.*"`), `[defaults]`
//! (`malformed = "deny" | "permit"`), and the arrays of tables below. Every
//! table also accepts `description`.
//!
//! * `[[port]]`: `name`, `vlan` (access/native VLAN, 1-4094), `trunk`
//!   (tagged VLANs: numbers or `"lo-hi"`), `device`. A tagged frame is
//!   accepted when its VID is in `trunk` or equals `vlan`; untagged and
//!   priority-tagged (VID 0) frames take `vlan`.
//! * `[[interface]]`: `name` and exactly one of `vlan` (an SVI) or `port` (a
//!   routed port).
//! * `[[acl]]`: `name`, `default` (`"deny"` unless given), `log_default`
//!   (`true` logs the frames the default decides), and `[[acl.rule]]`s.
//! * `[[acl.rule]]`: `action` (required), `id`, and match keys:
//!   `src`/`dst` (address, prefix, list, or `"any"`; IPv4 and IPv6; host
//!   bits must be zero), `proto` (name, 0-255, `"any"`, or a list of
//!   names and numbers: `["tcp", "udp"]`), `src_port`/`dst_port` (number,
//!   `"lo-hi"`, or a list of both), `icmp_type` and `icmp_code` (0-255 or a
//!   list), `tcp_flags` (`"syn,!ack"`: listed flags must be set, `!`
//!   flags clear, others ignored), `vlan` (numbers or ranges), `fragment`
//!   (`"none"`, `"first"`, `"non-first"`, `"any"`), `dscp` (0-63 or `ef`,
//!   `afXY`, `csN`, `be`; list allowed), `ethertype` (`"arp"`, `"ipv4"`,
//!   `"ipv6"`, ... or a number), `family` (`"ipv4"`/`"ipv6"`), `state` (the
//!   frame's flow state: `"new"`, `"established"`, `"related"`,
//!   `"invalid"`, or a list of them), and `log` (`true` logs the frames the
//!   rule decides, rate-limited). A key left out matches anything.
//!   `keep_state = true` (permit rules only): a frame whose final verdict is
//!   permit and whose stage this rule decided opens a flow entry, so the
//!   flow's frames in both directions are `established` from then on. A
//!   rule that can never match (IPv4 `src` with IPv6
//!   `dst`, ports with `proto = "icmp"`, `icmp_type` with `proto = "tcp"`,
//!   ports on non-first fragments, ports with `proto = ["icmp", "gre"]`, ...)
//!   is an error; a listed protocol that can never match while the others can
//!   (`proto = ["tcp", "icmp"]` with `dst_port`) is a warning.
//! * `[[bind]]`: `acl` and exactly one of `port` (Port ACL), `vlan` (VLAN
//!   ACL) or `interface` with `direction = "in" | "out"` (Routed ACL). One
//!   ACL per port, per VLAN, per interface and direction.
//! * `[[set]]`: `name` (letters, digits, `_`, `-`, `.`), `elements` (a
//!   list) and/or `file` (one element a line, `#` comments, a path relative
//!   to the rule file), optional `kind = "address" | "port"`. An address set
//!   holds IPv4 and IPv6 addresses and prefixes together; a port set holds
//!   ports and `"lo-hi"` ranges. Overlapping elements are merged, not errors;
//!   an element of the other kind, or a bad one, is an error at its own
//!   `file:line:col` (in the set file for its lines). Rules refer to a set in
//!   `src`, `dst`, `src_port` or `dst_port` as `"@name"` (in the set) or
//!   `"!@name"` (not in it), alone in the key; like a prefix or port list, a
//!   reference matches only frames that carry the field. Each distinct
//!   (set, field) pair is one set test, at most [`MAX_SET_TESTS`] (32) per
//!   rule set. A rescue rule cannot use a set. Sets are not expanded into
//!   rules: they compile to membership structures looked up once per frame
//!   (see `palisade_classify::set`), so a million-prefix set costs a frame
//!   about as much as a small one. An unused set is a warning.
//! * `[flows]`: `max` (entries, default 1,048,576, at most [`MAX_FLOWS`])
//!   and idle timeouts in seconds: `tcp_handshake` (30), `tcp_established`
//!   (86400), `tcp_closing` (60), `udp` (60), `icmp` (10), `other` (60); see
//!   [`FlowsDef`].
//! * `[[rescue]]`: the match keys of a rule (no `action`, no `keep_state`), optional `id`;
//!   always permitted, before every stage. A rescue rule matching everything
//!   is refused.
//! * `[[expect]]`: `port`, `packet = { proto, src, dst, src_port, dst_port,
//!   icmp_type, icmp_code, tcp_flags, vlan, fragment, dscp, ethertype,
//!   malformed, state }`, optional `route = { from, to }`, `verdict`, and optionally
//!   the deciding `stage` (`pacl`, `vacl-in`, `racl-in`, `racl-out`,
//!   `vacl-out`, `rescue`, `malformed`, `vlan-filter`, `none`) and `rule`
//!   (id, `#N`, `default`). Packet defaults: TCP flags `syn`, ICMP echo
//!   request, port 49152, `vlan` 0 means priority-tagged, and the state the
//!   packet has when its flow has no entry (`new` if it may open one, else
//!   `invalid`); a state the packet could never be in is an error.
//!
//! * `[logging]`: `rate` (records a second per logged rule, 1-1000000,
//!   default 10) and `burst` (records at once, 1-1000000, default 20). A
//!   frame over its rule's limit is decided as without logging; only the
//!   record is dropped (and counted).
//!
//! A rule file and its set files are one generation: [`Loaded::digest`]
//! covers them all, and [`Loaded::files`] carries the set files' bytes for
//! the engine to keep. [`load`] reads set files from beside the rule file;
//! [`parse_with`] takes them from any [`SetFiles`] source (a kept
//! generation's copy at a last-known-good boot); [`change_set`] makes the
//! generation that `palisade set add|del` publishes.
//!
//! Errors: TOML syntax, unknown keys (with a "did you mean"), wrong types,
//! out-of-range numbers, reversed ranges, bad prefixes, duplicate names or
//! rule ids, dangling references, two targets in one binding, a Routed
//! binding without `direction`, unknown or mistyped sets, bad set elements,
//! `keep_state` on a deny rule, an unknown state, a zero or too large
//! `[flows]` number. Warnings: a rule shadowed by an earlier rule of its ACL,
//! an ACL bound nowhere, an SVI for a VLAN no port carries, a set no rule
//! uses, `keep_state` on a rule whose `state` excludes `new`, a `[flows]`
//! table no rule uses.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod flows;
mod logging;
mod model;
mod names;
mod packet;
mod parse;
mod semver;
mod sets;
mod shadow;
mod validate;

pub use flows::{FlowTimeouts, FlowsDef, DEFAULT_MAX_FLOWS, MAX_FLOWS, MAX_FLOW_TIMEOUT};
pub use packet::{format_packet, parse_packet_spec};
pub use sets::{
    change_set, parse_element_lines, resolve_set_file, CompanionFile, DiskFiles, KeptFiles, SetChange,
    SetChangeError, SetDef, SetElements, SetFileRef, SetFiles, SetKind, SetOp, SetTest, MAX_SET_FILE_BYTES,
    MAX_SET_TESTS,
};

pub use model::{
    AclDef, AclRule, Action, BindTarget, BindingDef, Defaults, Direction, ExpectDef, InterfaceDef,
    InterfaceTarget, Logging, PortDef, RescueDef, RuleSet, Span,
};

use std::fmt;
use std::path::Path;

/// This engine's version, checked against a rule file's `requires`.
pub const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How serious a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    /// The rule set is refused.
    Error,
    /// Suspicious but accepted (a shadowed rule, an unbound ACL).
    Warning,
}

/// One message about a rule file, located at `file:line:col`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name as given to [`parse`].
    pub file: String,
    /// Where in the file.
    pub span: Span,
    /// Error or warning.
    pub severity: Severity,
    /// The plain cause, e.g. `acl "web-in" rule 3: dst_port range 443-80 is reversed`.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    /// `file:line:col: message`, with `warning: ` before the message for warnings.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        write!(
            f,
            "{}:{}:{}: {}{}",
            self.file, self.span.line, self.span.col, kind, self.message
        )
    }
}

/// SHA-256 of a rule file's bytes; its `Display` is lowercase hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    ///
    /// ```
    /// let d = palisade_rules::Digest::of(b"");
    /// assert!(d.to_string().starts_with("e3b0c442"));
    /// ```
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Digest(sha2::Sha256::digest(bytes).into())
    }

    /// The digest of a generation made of a rule file and named companion
    /// files (set files, as named in the rule file). With no companion it is
    /// the rule file's own digest, [`Digest::of`]; otherwise SHA-256 of a
    /// manifest of the parts' names and digests ([`Digest::of_manifest`]), so
    /// a change to any part, or to a name, changes it.
    ///
    /// ```
    /// use palisade_rules::Digest;
    /// assert_eq!(Digest::of_parts(b"version = 1\n", &[]), Digest::of(b"version = 1\n"));
    /// let a = Digest::of_parts(b"r", &[("a.txt", b"1\n")]);
    /// assert_ne!(a, Digest::of_parts(b"r", &[("b.txt", b"1\n")]));
    /// assert_ne!(a, Digest::of(b"r"));
    /// ```
    pub fn of_parts(rule_file: &[u8], companions: &[(&str, &[u8])]) -> Self {
        if companions.is_empty() {
            return Digest::of(rule_file);
        }
        let parts: Vec<(&str, Digest)> = companions.iter().map(|(n, b)| (*n, Digest::of(b))).collect();
        Digest::of_manifest(Digest::of(rule_file), &parts)
    }

    /// [`Digest::of_parts`] from the parts' own SHA-256s: the rule file's
    /// digest when there is no companion, else SHA-256 of the manifest
    /// `palisade-generation 1\nrules <digest>\n` followed by
    /// `file <digest> <name length> <name>\n` per companion in name order.
    /// A changed set file is hashed once, never the whole generation again.
    ///
    /// ```
    /// use palisade_rules::Digest;
    /// let (r, s) = (b"version = 1\n", b"10.0.0.0/8\n");
    /// assert_eq!(
    ///     Digest::of_manifest(Digest::of(r), &[("s.txt", Digest::of(s))]),
    ///     Digest::of_parts(r, &[("s.txt", s)])
    /// );
    /// ```
    pub fn of_manifest(rule_file: Digest, companions: &[(&str, Digest)]) -> Self {
        if companions.is_empty() {
            return rule_file;
        }
        let mut sorted: Vec<&(&str, Digest)> = companions.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let mut manifest = format!("palisade-generation 1\nrules {rule_file}\n");
        for (name, digest) in sorted {
            manifest.push_str(&format!("file {digest} {} {name}\n", name.len()));
        }
        Digest::of(manifest.as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A parsed and validated rule file, with its set files: one generation's source.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The file name as given.
    pub file: String,
    /// The rule set.
    pub ruleset: RuleSet,
    /// Warnings (the set is still valid).
    pub warnings: Vec<Diagnostic>,
    /// The generation's digest, [`Digest::of_parts`] of the rule file and its
    /// set files (the rule file's SHA-256 when it names none): the digest
    /// last-known-good keeps and checks, covering every file.
    pub digest: Digest,
    /// SHA-256 of the rule file's bytes alone.
    pub rules_digest: Digest,
    /// The set files read, each once, in the order the `[[set]]`s name them.
    pub files: Vec<CompanionFile>,
}

/// Why [`load`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    Io {
        /// The path.
        path: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The file was read but is not a valid rule set; every error is listed.
    Invalid(Vec<Diagnostic>),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io { path, error } => write!(f, "{path}: cannot read: {error}"),
            LoadError::Invalid(diags) => {
                for (i, d) in diags.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{d}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for LoadError {}

/// The largest rule file accepted, in bytes (16 MiB): a bigger one is refused
/// before it is parsed, and a file is never read past this size (so neither
/// a huge file nor a device that never ends can exhaust memory).
pub const MAX_RULE_FILE_BYTES: usize = 16 << 20;

/// The most rules one ACL may have (65,536); more is an error at the ACL.
pub const MAX_RULES_PER_ACL: usize = 1 << 16;

/// Reads a rule file's bytes: a regular file of at most [`MAX_RULE_FILE_BYTES`]
/// (a FIFO or device is refused, so a read never blocks or runs forever).
///
/// The file is opened with `O_NONBLOCK` (opening a FIFO that has no writer
/// would otherwise wait forever), then checked with `fstat` on the open file
/// (not the path, which could be swapped in between) before a byte is read.
///
/// ```
/// let e = palisade_rules::read_rule_file(std::path::Path::new("/dev/zero")).unwrap_err();
/// assert!(e.to_string().contains("not a regular file"), "{e}");
/// ```
pub fn read_rule_file(path: &Path) -> std::io::Result<Vec<u8>> {
    read_bounded(path, MAX_RULE_FILE_BYTES, "MAX_RULE_FILE_BYTES")
}

/// Reads a regular file of at most `max` bytes (`limit` names the limit in the error).
pub(crate) fn read_bounded(path: &Path, max: usize, limit: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut open = std::fs::OpenOptions::new();
    open.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        open.custom_flags(libc::O_NONBLOCK);
    }
    let file = open.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let too_big = |n: u64| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the file is {n} bytes, more than the limit of {max} bytes ({limit})"),
        )
    };
    if meta.len() > max as u64 {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > max {
        return Err(too_big(bytes.len() as u64)); // it grew while being read
    }
    Ok(bytes)
}

/// Reads and parses a rule file, and its set files from beside it ([`DiskFiles`]).
///
/// ```
/// let err = palisade_rules::load(std::path::Path::new("/nonexistent.toml")).unwrap_err();
/// assert!(err.to_string().contains("/nonexistent.toml"));
/// ```
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let name = path.display().to_string();
    let bytes = read_rule_file(path).map_err(|error| LoadError::Io {
        path: name.clone(),
        error,
    })?;
    parse_with(&name, &bytes, &DiskFiles).map_err(LoadError::Invalid)
}

/// Parses and validates the bytes of a rule file named `file`.
///
/// On failure every error found is returned, sorted by position (warnings
/// are dropped then). On success the warnings are in [`Loaded::warnings`].
/// Never panics, whatever the bytes.
///
/// ```
/// let errs = palisade_rules::parse("bad.toml", b"version = 1\n[[acl]]\nname = \"a\"\ndefualt = \"deny\"\n").unwrap_err();
/// assert_eq!(errs[0].to_string(), "bad.toml:4:1: unknown key \"defualt\" in [[acl]] (did you mean \"default\"?)");
/// ```
pub fn parse(file: &str, bytes: &[u8]) -> Result<Loaded, Vec<Diagnostic>> {
    parse_with(file, bytes, &KeptFiles::default())
}

/// [`parse`], reading the set files that `[[set]]`s name from `files`: a
/// [`DiskFiles`] resolves them beside `file` (as [`load`] does), a
/// [`KeptFiles`] takes them from memory (a kept generation). Errors in a set
/// file are located in it: `blocklist.txt:7:1: set "blocklist": ...`.
///
/// ```
/// use palisade_rules::KeptFiles;
/// let rules = b"version = 1\n[[set]]\nname = \"bl\"\nfile = \"bl.txt\"\n\
///     [[acl]]\nname = \"a\"\n[[acl.rule]]\naction = \"deny\"\nsrc = \"!@bl\"\n";
/// let files = KeptFiles::new([("bl.txt".to_string(), b"10.0.0.0/8\n# comment\n10.0.0.1/24\n".to_vec())]);
/// let errs = palisade_rules::parse_with("etc/r.toml", rules, &files).unwrap_err();
/// assert_eq!(errs[0].to_string(), "etc/bl.txt:3:1: set \"bl\": prefix \"10.0.0.1/24\" has host bits set (did you mean 10.0.0.0/24?)");
/// ```
pub fn parse_with(file: &str, bytes: &[u8], files: &dyn SetFiles) -> Result<Loaded, Vec<Diagnostic>> {
    if bytes.len() > MAX_RULE_FILE_BYTES {
        return Err(vec![Diagnostic {
            file: file.to_owned(),
            span: Span { line: 1, col: 1 },
            severity: Severity::Error,
            message: format!(
                "the file is {} bytes, more than the limit of {MAX_RULE_FILE_BYTES} bytes (MAX_RULE_FILE_BYTES)",
                bytes.len()
            ),
        }]);
    }
    let digest = Digest::of(bytes);
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or("");
            let cx = parse::Cx::new(file, valid);
            return Err(vec![Diagnostic {
                file: file.to_owned(),
                span: cx.span(valid.len()),
                severity: Severity::Error,
                message: "the file is not valid UTF-8".into(),
            }]);
        }
    };
    let mut cx = parse::Cx::new(file, text);
    cx.sets.files = Some(files);
    let (root, syntax) = toml::de::DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        // The TOML parser recovers and goes on, but after the first error on
        // a line the rest of that line is mostly its echo: one per line.
        let mut offs: Vec<(usize, String)> = syntax
            .iter()
            .map(|e| (e.span().map_or(0, |s| s.start), e.message().trim().to_owned()))
            .collect();
        offs.sort_by_key(|(off, _)| *off);
        // Past a few lines, they are the echo of an unclosed bracket or quote.
        const SHOWN: usize = 10;
        let mut last_line = 0;
        let mut lines: Vec<(usize, String)> = Vec::new();
        for (off, msg) in offs {
            let line = cx.span(off).line;
            if line != last_line {
                last_line = line;
                lines.push((off, msg));
            }
        }
        let hidden = lines.len().saturating_sub(SHOWN);
        for (off, msg) in lines.iter().take(SHOWN) {
            cx.error(*off, format!("TOML syntax: {msg}"));
        }
        if let Some((off, _)) = lines.get(SHOWN) {
            cx.error(
                *off,
                format!("TOML syntax: {hidden} more lines with errors not shown"),
            );
        }
        return Err(finish(file, cx.diags).1);
    }
    let (ruleset, mut locs) = parse::document(&mut cx, &root);
    for a in ruleset.acls.iter().filter(|a| a.rules.len() > MAX_RULES_PER_ACL) {
        cx.diags.push(Diagnostic {
            file: file.to_owned(),
            span: a.span,
            severity: Severity::Error,
            message: format!(
                "acl \"{}\" has {} rules, more than the limit of {MAX_RULES_PER_ACL} (MAX_RULES_PER_ACL)",
                a.name,
                a.rules.len()
            ),
        });
    }
    parse::resolve(&mut cx, &ruleset, &locs);
    let (warnings, errors) = finish(file, cx.diags);
    if !errors.is_empty() {
        return Err(errors);
    }
    let files = std::mem::take(&mut locs.set_files);
    Ok(Loaded {
        file: file.to_owned(),
        ruleset,
        warnings,
        digest: sets::generation_digest(digest, &files),
        rules_digest: digest,
        files,
    })
}

/// Sorts diagnostics by position (the rule file's first, then each set
/// file's) and splits them into (warnings, errors).
fn finish(file: &str, mut diags: Vec<Diagnostic>) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
    diags.sort_by(|a, b| {
        (a.file != file, &a.file, a.span.line, a.span.col).cmp(&(
            b.file != file,
            &b.file,
            b.span.line,
            b.span.col,
        ))
    });
    diags.into_iter().partition(|d| d.severity == Severity::Warning)
}
