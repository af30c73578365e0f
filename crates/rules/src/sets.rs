//! Named sets: `[[set]]` tables, set files, `"@name"` references, set changes.
//!
//! A `[[set]]` has a `name`, `elements` (a list in the rule file) and/or a
//! `file` (one element a line, `#` comments, a path relative to the rule
//! file), and optionally `kind = "address" | "port"`. An address set takes
//! IPv4 and IPv6 addresses and prefixes together; a port set takes ports and
//! `lo-hi` ranges. The kind is `kind`, else that of the first element; an
//! element of the other kind is an error, located in the file that lists it.
//! Overlapping elements are kept as listed and merged when the set is compiled.
//!
//! A rule refers to a set in `src`, `dst`, `src_port` or `dst_port` as
//! `"@name"` ("in the set") or `"!@name"` ("not in the set"); the reference
//! stands alone in its key. Each distinct (set, field) pair of a rule set is
//! one *set test*, a bit of the key's set membership; a rule set may have at
//! most [`MAX_SET_TESTS`] of them.
//!
//! Set files are read through a [`SetFiles`] source: [`DiskFiles`] beside the
//! rule file for a check or a reload, [`KeptFiles`] from a kept generation at
//! a last-known-good boot.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade_classify::{AddrList, PortList, PortRange, Prefix, RuleMatch, SetField};
use toml::de::{DeTable, DeValue};

use crate::model::Span;
use crate::packet::parse_prefix;
use crate::parse::{self, Cx, V};
use crate::{Diagnostic, Digest, Severity};

pub use palisade_classify::MAX_SET_TESTS;

/// The largest set file accepted, in bytes (64 MiB: four million IPv4 prefixes).
pub const MAX_SET_FILE_BYTES: usize = 64 << 20;

/// Errors shown per set file; past them, one line says how many more there are.
const SHOWN_ERRORS: usize = 20;

/// What a set holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetKind {
    /// IPv4 and IPv6 addresses and prefixes.
    Addresses,
    /// Ports and port ranges.
    Ports,
}

impl SetKind {
    /// `"address"` or `"port"`, as `kind` is written.
    ///
    /// ```
    /// assert_eq!(palisade_rules::SetKind::Ports.as_str(), "port");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            SetKind::Addresses => "address",
            SetKind::Ports => "port",
        }
    }
}

/// The elements of a set (shared: a set change copies only the set it changes).
#[derive(Clone, PartialEq, Eq)]
pub enum SetElements {
    /// Address prefixes.
    Addresses(Arc<AddrList>),
    /// Ports and ranges.
    Ports(Arc<PortList>),
}

impl SetElements {
    /// Number of elements (as listed, duplicates counted once).
    ///
    /// ```
    /// use palisade_rules::SetElements;
    /// assert_eq!(SetElements::Ports(Default::default()).len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        match self {
            SetElements::Addresses(a) => a.len(),
            SetElements::Ports(p) => p.len(),
        }
    }

    /// Whether there is no element.
    ///
    /// ```
    /// assert!(palisade_rules::SetElements::Addresses(Default::default()).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kind.
    ///
    /// ```
    /// use palisade_rules::{SetElements, SetKind};
    /// assert_eq!(SetElements::Ports(Default::default()).kind(), SetKind::Ports);
    /// ```
    pub fn kind(&self) -> SetKind {
        match self {
            SetElements::Addresses(_) => SetKind::Addresses,
            SetElements::Ports(_) => SetKind::Ports,
        }
    }
}

impl fmt::Debug for SetElements {
    /// The kind and count (a million elements are not printed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} elements", self.len(), self.kind().as_str())
    }
}

/// A set's file, as the rule file names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetFileRef {
    /// The path as written in `file = "..."`.
    pub name: String,
    /// Where it resolves: relative to the rule file's directory.
    pub path: PathBuf,
    /// SHA-256 of its bytes.
    pub digest: Digest,
    /// Elements listed in the file.
    pub elements: usize,
}

/// `[[set]]`: a named set of addresses or ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetDef {
    /// Unique set name (letters, digits, `_`, `-`, `.`).
    pub name: String,
    /// Every element: the inline ones and the file's.
    pub elements: SetElements,
    /// The elements listed in the rule file itself (`elements = [...]`).
    pub inline: SetElements,
    /// The set file, if any.
    pub file: Option<SetFileRef>,
    /// Where the table starts.
    pub span: Span,
}

/// One set test: bit `i` of a key's set membership, for `RuleSet::set_tests[i]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SetTest {
    /// Index into `RuleSet::sets`.
    pub set: usize,
    /// The field it looks at.
    pub field: SetField,
}

/// A file of a generation besides the rule file: a set file, with its bytes.
#[derive(Clone)]
pub struct CompanionFile {
    /// The path as written in the rule file.
    pub name: String,
    /// Where it resolves on disk.
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: Arc<Vec<u8>>,
    /// SHA-256 of the bytes.
    pub digest: Digest,
    /// The SHA-256 state after the bytes, not finalized: appending to a big
    /// set file (`set add`) hashes only what is appended.
    tail: Option<Arc<sha2::Sha256>>,
}

impl PartialEq for CompanionFile {
    /// Same name, place and digest (the bytes are what the digest says).
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.path == other.path && self.digest == other.digest
    }
}

impl Eq for CompanionFile {}

impl CompanionFile {
    /// A file and its digest.
    ///
    /// ```
    /// let f = palisade_rules::CompanionFile::new("bl.txt".into(), "/etc/bl.txt".into(), b"10.0.0.0/8\n".to_vec());
    /// assert_eq!(f.digest, palisade_rules::Digest::of(b"10.0.0.0/8\n"));
    /// ```
    pub fn new(name: String, path: PathBuf, bytes: Vec<u8>) -> Self {
        Self::hashed(name, path, Arc::new(bytes))
    }

    fn hashed(name: String, path: PathBuf, bytes: Arc<Vec<u8>>) -> Self {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(bytes.as_slice());
        let tail = h.clone();
        CompanionFile {
            name,
            path,
            digest: Digest(h.finalize().into()),
            bytes,
            tail: Some(Arc::new(tail)),
        }
    }

    /// This file with `more` appended: the digest continues from the saved
    /// state when there is one, so only `more` is hashed.
    fn appended(&self, more: &[u8]) -> Self {
        use sha2::Digest as _;
        let mut bytes = Vec::with_capacity(self.bytes.len() + more.len());
        bytes.extend_from_slice(&self.bytes);
        bytes.extend_from_slice(more);
        let Some(tail) = &self.tail else {
            return Self::hashed(self.name.clone(), self.path.clone(), Arc::new(bytes));
        };
        let mut h = (**tail).clone();
        h.update(more);
        let tail = h.clone();
        CompanionFile {
            name: self.name.clone(),
            path: self.path.clone(),
            digest: Digest(h.finalize().into()),
            bytes: Arc::new(bytes),
            tail: Some(Arc::new(tail)),
        }
    }
}

impl fmt::Debug for CompanionFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompanionFile")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("len", &self.bytes.len())
            .field("digest", &self.digest.to_string())
            .finish()
    }
}

/// Where set files come from.
pub trait SetFiles {
    /// The bytes of the set file written as `name` in the rule file, which
    /// resolves to `path` on disk.
    fn read(&self, name: &str, path: &Path) -> io::Result<Arc<Vec<u8>>>;
}

/// Set files read from disk (regular files of at most [`MAX_SET_FILE_BYTES`]).
///
/// ```
/// use palisade_rules::{DiskFiles, SetFiles};
/// let e = DiskFiles.read("x", std::path::Path::new("/nonexistent/x")).unwrap_err();
/// assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskFiles;

impl SetFiles for DiskFiles {
    fn read(&self, _name: &str, path: &Path) -> io::Result<Arc<Vec<u8>>> {
        crate::read_bounded(path, MAX_SET_FILE_BYTES, "MAX_SET_FILE_BYTES").map(Arc::new)
    }
}

/// Set files from memory, by the name the rule file gives them (a kept
/// generation's files, or no files at all).
///
/// ```
/// use palisade_rules::{KeptFiles, SetFiles};
/// let kept = KeptFiles::new([("bl.txt".to_string(), b"10.0.0.0/8\n".to_vec())]);
/// assert_eq!(kept.read("bl.txt", "/gone/bl.txt".as_ref()).unwrap().len(), 11);
/// assert!(kept.read("other.txt", "other.txt".as_ref()).is_err());
/// ```
#[derive(Clone, Debug, Default)]
pub struct KeptFiles(HashMap<String, Arc<Vec<u8>>>);

impl KeptFiles {
    /// Files by name.
    pub fn new(files: impl IntoIterator<Item = (String, Vec<u8>)>) -> Self {
        KeptFiles(files.into_iter().map(|(n, b)| (n, Arc::new(b))).collect())
    }

    /// The files of a loaded rule set (shared, not copied).
    pub fn of(loaded: &crate::Loaded) -> Self {
        KeptFiles(
            loaded
                .files
                .iter()
                .map(|f| (f.name.clone(), Arc::clone(&f.bytes)))
                .collect(),
        )
    }
}

impl SetFiles for KeptFiles {
    fn read(&self, name: &str, _path: &Path) -> io::Result<Arc<Vec<u8>>> {
        self.0.get(name).cloned().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "not part of this generation (set files are read by palisade_rules::load or parse_with)",
            )
        })
    }
}

/// Where a set file named `name` in the rule file `rule_file` lives: beside it.
///
/// ```
/// use std::path::Path;
/// assert_eq!(palisade_rules::resolve_set_file("/etc/palisade/rules.toml", "bl.txt"), Path::new("/etc/palisade/bl.txt"));
/// assert_eq!(palisade_rules::resolve_set_file("rules.toml", "/var/lib/bl.txt"), Path::new("/var/lib/bl.txt"));
/// ```
pub fn resolve_set_file(rule_file: &str, name: &str) -> PathBuf {
    let dir = Path::new(rule_file).parent().unwrap_or(Path::new(""));
    dir.join(name)
}

/// A parsed element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Element {
    Addr(Prefix),
    Port(PortRange),
}

impl Element {
    fn kind(&self) -> SetKind {
        match self {
            Element::Addr(_) => SetKind::Addresses,
            Element::Port(_) => SetKind::Ports,
        }
    }
}

/// Parses one element: an address or prefix, or a port or `lo-hi` range.
fn parse_element(text: &str) -> Result<Element, String> {
    if text.contains(['.', ':', '/']) {
        return parse_prefix(text).map(Element::Addr);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'-' || b == b' ') {
        return parse::range_text(text, 65535, "port").map(|(lo, hi)| {
            Element::Port(PortRange {
                lo: lo as u16,
                hi: hi as u16,
            })
        });
    }
    Err(format!(
        "\"{text}\" is not an address, a prefix, a port or a port range"
    ))
}

/// One `[[set]]` as parsed, before references decide the kind of an empty one.
struct Parsed {
    name: String,
    /// The kind, with the text and place of what decided it (for messages).
    kind: Option<(SetKind, String)>,
    addrs: Vec<Prefix>,
    ports: Vec<PortRange>,
    inline_addrs: Vec<Prefix>,
    inline_ports: Vec<PortRange>,
    file: Option<SetFileRef>,
    span: Span,
    name_off: usize,
    used: bool,
}

/// The sets of the file being parsed, and the set tests its rules make.
#[derive(Default)]
pub(crate) struct Scope<'s> {
    pub(crate) files: Option<&'s dyn SetFiles>,
    sets: Vec<Parsed>,
    by_name: HashMap<String, usize>,
    tests: Vec<SetTest>,
    companions: Vec<CompanionFile>,
}

/// Parses every `[[set]]` (before the ACLs, which refer to them).
pub(crate) fn parse_sets(cx: &mut Cx, root: &DeTable) {
    for (i, v) in parse::table_array(cx, root, "set").into_iter().enumerate() {
        let ctx0 = format!("set {}", i + 1);
        let Some(f) = parse::fields(
            cx,
            v,
            "[[set]]",
            &["name", "elements", "file", "kind", "description"],
        ) else {
            continue;
        };
        let at = f.at;
        let name_off = f.get("name").map_or(at, |v| v.span().start);
        let name = match f.get("name") {
            None => {
                cx.error(at, format!("{ctx0}: missing required key `name`"));
                None
            }
            Some(n) => parse::name(cx, &ctx0, "name", n).and_then(|n| {
                if n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
                {
                    Some(n)
                } else {
                    cx.error(
                        name_off,
                        format!("{ctx0}: set name \"{n}\" may hold only letters, digits, `_`, `-` and `.`"),
                    );
                    None
                }
            }),
        };
        let ctx = name.as_ref().map_or(ctx0, |n| format!("set \"{n}\""));
        let mut p = Parsed {
            name: name.clone().unwrap_or_default(),
            kind: None,
            addrs: Vec::new(),
            ports: Vec::new(),
            inline_addrs: Vec::new(),
            inline_ports: Vec::new(),
            file: None,
            span: cx.span(at),
            name_off,
            used: false,
        };
        if let Some(k) = f.get("kind") {
            match parse::string(cx, &ctx, "kind", k) {
                Some("address") => p.kind = Some((SetKind::Addresses, "kind = \"address\"".into())),
                Some("port") => p.kind = Some((SetKind::Ports, "kind = \"port\"".into())),
                Some(other) => cx.error(
                    k.span().start,
                    format!("{ctx}: kind \"{other}\" is not \"address\" or \"port\""),
                ),
                None => {}
            }
        }
        if f.get("elements").is_none() && f.get("file").is_none() {
            cx.error(at, format!("{ctx}: give `elements`, `file` or both"));
        }
        if let Some(ev) = f.get("elements") {
            inline_elements(cx, &ctx, ev, &mut p);
        }
        if let Some(fv) = f.get("file") {
            set_file(cx, &ctx, fv, &mut p);
        }
        if let Some(n) = name {
            if let Some(&first) = cx.sets.by_name.get(&n) {
                let first_off = cx.sets.sets[first].name_off;
                let msg = format!("duplicate set \"{n}\" (first defined at {})", cx.at(first_off));
                cx.error(name_off, msg);
                continue;
            }
            cx.sets.by_name.insert(n, cx.sets.sets.len());
        }
        cx.sets.sets.push(p);
    }
}

/// Adds an element to a set, or reports a kind mismatch at `off`.
fn add_element(ctx: &str, p: &mut Parsed, e: Element, text: &str, inline: bool) -> Result<(), String> {
    match &p.kind {
        Some((k, why)) if *k != e.kind() => {
            return Err(format!(
                "{ctx}: {text} is {}, but the set holds {} ({why})",
                match e.kind() {
                    SetKind::Addresses => "an address",
                    SetKind::Ports => "a port",
                },
                match k {
                    SetKind::Addresses => "addresses",
                    SetKind::Ports => "ports",
                }
            ));
        }
        Some(_) => {}
        None => p.kind = Some((e.kind(), format!("its first element is {text}"))),
    }
    match e {
        Element::Addr(a) => {
            p.addrs.push(a);
            if inline {
                p.inline_addrs.push(a);
            }
        }
        Element::Port(r) => {
            p.ports.push(r);
            if inline {
                p.inline_ports.push(r);
            }
        }
    }
    Ok(())
}

fn inline_elements(cx: &mut Cx, ctx: &str, v: &V, p: &mut Parsed) {
    let items: Vec<&V> = match v.get_ref() {
        DeValue::Array(a) => a.iter().collect(),
        _ => vec![v],
    };
    for e in items {
        let off = e.span().start;
        let parsed = match e.get_ref() {
            DeValue::String(s) => parse_element(s.trim()).map(|el| (el, s.trim().to_owned())),
            DeValue::Integer(i) => match i128::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) if (0..=65535).contains(&n) => {
                    Ok((Element::Port(PortRange::single(n as u16)), n.to_string()))
                }
                _ => Err(format!("port {i} is not a number 0-65535")),
            },
            other => Err(format!(
                "an element is an address, a prefix, a port or a range, not {}",
                other.type_str()
            )),
        };
        let result = parsed.and_then(|(el, text)| add_element(ctx, p, el, &text, true));
        if let Err(msg) = result {
            let msg = if msg.starts_with(ctx) {
                msg
            } else {
                format!("{ctx}: elements: {msg}")
            };
            cx.error(off, msg);
        }
    }
}

fn set_file(cx: &mut Cx, ctx: &str, v: &V, p: &mut Parsed) {
    let off = v.span().start;
    let Some(name) = parse::string(cx, ctx, "file", v).map(str::to_owned) else {
        return;
    };
    if name.trim().is_empty() {
        cx.error(off, format!("{ctx}: file must not be empty"));
        return;
    }
    let path = resolve_set_file(cx.file(), &name);
    let Some(files) = cx.sets.files else {
        cx.error(off, format!("{ctx}: file \"{name}\": set files are not read here (palisade_rules::parse reads none; use load or parse_with)"));
        return;
    };
    let bytes = match files.read(&name, &path) {
        Ok(b) => b,
        Err(e) => {
            cx.error(
                off,
                format!("{ctx}: file \"{name}\" ({}): cannot read: {e}", path.display()),
            );
            return;
        }
    };
    let file = CompanionFile::hashed(name.clone(), path.clone(), Arc::clone(&bytes));
    let digest = file.digest;
    let display = path.display().to_string();
    let before = p.addrs.len() + p.ports.len();
    let errors = parse_file_elements(ctx, &display, &bytes, |el, text| {
        add_element(ctx, p, el, text, false)
    });
    for d in errors {
        cx.diags.push(d);
    }
    let elements = p.addrs.len() + p.ports.len() - before;
    p.file = Some(SetFileRef {
        name: name.clone(),
        path: path.clone(),
        digest,
        elements,
    });
    if !cx.sets.companions.iter().any(|c| c.name == name) {
        cx.sets.companions.push(file);
    }
}

/// Parses a set file's lines, calling `add` per element; the errors, located
/// in that file (`display` is its name in them), at most [`SHOWN_ERRORS`].
fn parse_file_elements(
    ctx: &str,
    display: &str,
    bytes: &[u8],
    mut add: impl FnMut(Element, &str) -> Result<(), String>,
) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    let mut hidden = 0usize;
    let mut error = |line: usize, col: usize, message: String| {
        if errors.len() < SHOWN_ERRORS {
            errors.push(Diagnostic {
                file: display.to_owned(),
                span: Span {
                    line: line as u32,
                    col: col as u32,
                },
                severity: Severity::Error,
                message,
            });
        } else {
            hidden += 1;
        }
    };
    let (text, bad_utf8) = match std::str::from_utf8(bytes) {
        Ok(t) => (t, None),
        Err(e) => (
            std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
            Some(e.valid_up_to()),
        ),
    };
    let mut last_line = 0;
    for (n, raw) in text.split('\n').enumerate() {
        last_line = n + 1;
        let content = raw.split('#').next().unwrap_or("");
        let trimmed = content.trim();
        if trimmed.is_empty() {
            continue;
        }
        let start = content.len() - content.trim_start().len();
        let col = |byte: usize| raw.get(..byte).map_or(byte, |s| s.chars().count()) + 1;
        let mut words = trimmed.split_whitespace();
        let first = words.next().unwrap_or("");
        if let Some(extra) = words.next() {
            let at = raw.find(extra).filter(|&i| i > start).unwrap_or(start);
            error(
                n + 1,
                col(at),
                format!("{ctx}: one element a line, but \"{extra}\" follows {first}"),
            );
            continue;
        }
        if let Err(msg) = parse_element(first).and_then(|el| add(el, first)) {
            let msg = if msg.starts_with(ctx) {
                msg
            } else {
                format!("{ctx}: {msg}")
            };
            error(n + 1, col(start), msg);
        }
    }
    if let Some(valid) = bad_utf8 {
        let line = text.matches('\n').count() + 1;
        let col = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        let _ = valid;
        error(
            line.max(last_line),
            col,
            format!("{ctx}: the file is not valid UTF-8"),
        );
    }
    if hidden > 0 {
        let last = errors.last().map(|d| d.span).unwrap_or_default();
        errors.push(Diagnostic {
            file: display.to_owned(),
            span: last,
            severity: Severity::Error,
            message: format!("{ctx}: {hidden} more lines with errors not shown"),
        });
    }
    errors
}

/// If `v` (the value of `key` in a rule) is a set reference, resolves it into
/// `m.sets` and returns true (errors go to `cx`); false when it is not one.
pub(crate) fn reference(cx: &mut Cx, ctx: &str, key: &str, v: &V, m: &mut RuleMatch) -> bool {
    let items: Vec<&V> = match v.get_ref() {
        DeValue::Array(a) => a.iter().collect(),
        _ => vec![v],
    };
    let is_ref =
        |e: &&&V| matches!(e.get_ref(), DeValue::String(s) if s.starts_with('@') || s.starts_with("!@"));
    let Some(first) = items.iter().find(is_ref) else {
        return false;
    };
    let off = first.span().start;
    if items.len() > 1 {
        cx.error(
            off,
            format!(
                "{ctx}: {key}: a set reference stands alone in its key (put the other elements into the set)"
            ),
        );
        return true;
    }
    let DeValue::String(text) = first.get_ref() else {
        return true;
    };
    let (negate, name) = match text.strip_prefix("!@") {
        Some(n) => (true, n),
        None => (false, text.trim_start_matches('@')),
    };
    let field = match key {
        "src" => SetField::Src,
        "dst" => SetField::Dst,
        "src_port" => SetField::SrcPort,
        _ => SetField::DstPort,
    };
    let Some(&set) = cx.sets.by_name.get(name) else {
        let names: Vec<&str> = cx.sets.by_name.keys().map(String::as_str).collect();
        let hint =
            parse::suggest(name, &names).map_or(String::new(), |s| format!(" (did you mean \"@{s}\"?)"));
        cx.error(off, format!("{ctx}: {key}: unknown set \"{name}\"{hint}"));
        return true;
    };
    let want = if field.is_port() {
        SetKind::Ports
    } else {
        SetKind::Addresses
    };
    let parsed = &mut cx.sets.sets[set];
    parsed.used = true;
    match &parsed.kind {
        Some((k, _)) if *k != want => {
            let msg = format!(
                "{ctx}: {key}: set \"{name}\" holds {}, but {key} needs {}",
                if *k == SetKind::Ports {
                    "ports"
                } else {
                    "addresses"
                },
                if want == SetKind::Ports {
                    "ports"
                } else {
                    "addresses"
                }
            );
            cx.error(off, msg);
            return true;
        }
        Some(_) => {}
        None => parsed.kind = Some((want, format!("it is used in {key}"))),
    }
    let test = SetTest { set, field };
    let bit = match cx.sets.tests.iter().position(|t| *t == test) {
        Some(b) => b,
        None => {
            if cx.sets.tests.len() >= MAX_SET_TESTS {
                cx.error(
                    off,
                    format!(
                        "{ctx}: {key}: set \"{name}\" in {key} would be set test {} of the rule set, more than the \
                         limit of {MAX_SET_TESTS} (MAX_SET_TESTS): each (set, field) pair is one test; use the same \
                         sets in the same fields, or merge sets",
                        cx.sets.tests.len() + 1
                    ),
                );
                return true;
            }
            cx.sets.tests.push(test);
            cx.sets.tests.len() - 1
        }
    };
    if negate {
        m.sets.non_member |= 1 << bit;
    } else {
        m.sets.member |= 1 << bit;
    }
    if field.is_port() {
        m.sets.needs_ports = true;
    }
    true
}

/// The sets, the tests and the set files, once every rule has been read;
/// warns about sets no rule uses.
pub(crate) fn finish(cx: &mut Cx) -> (Vec<crate::SetDef>, Vec<SetTest>, Vec<CompanionFile>) {
    let parsed = std::mem::take(&mut cx.sets.sets);
    let tests = std::mem::take(&mut cx.sets.tests);
    let files = std::mem::take(&mut cx.sets.companions);
    let mut defs = Vec::with_capacity(parsed.len());
    for p in parsed {
        if !p.used && !p.name.is_empty() {
            cx.warn(p.name_off, format!("set \"{}\" is used by no rule", p.name));
        }
        let kind = p.kind.map_or(SetKind::Addresses, |(k, _)| k);
        let (elements, inline) = match kind {
            SetKind::Addresses => (
                SetElements::Addresses(Arc::new(AddrList::from_prefixes(p.addrs))),
                SetElements::Addresses(Arc::new(AddrList::from_prefixes(p.inline_addrs))),
            ),
            SetKind::Ports => (
                SetElements::Ports(Arc::new(PortList::from_ranges(p.ports))),
                SetElements::Ports(Arc::new(PortList::from_ranges(p.inline_ports))),
            ),
        };
        defs.push(crate::SetDef {
            name: p.name,
            elements,
            inline,
            file: p.file,
            span: p.span,
        });
    }
    (defs, tests, files)
}

/// The digest of a generation ([`Digest::of_parts`] of the rule file and its
/// set files), from the digests already known.
pub(crate) fn generation_digest(rules: Digest, files: &[CompanionFile]) -> Digest {
    let parts: Vec<(&str, Digest)> = files.iter().map(|f| (f.name.as_str(), f.digest)).collect();
    Digest::of_manifest(rules, &parts)
}

/// Parses element lines (a set file's format: one element a line, `#`
/// comments) into the elements' texts, for `palisade set add --file F`.
/// Errors are located in `name` at line:col.
///
/// ```
/// let elements = palisade_rules::parse_element_lines("new.txt", "# new\n192.0.2.1\n2001:db8::/32  # v6\n").unwrap();
/// assert_eq!(elements, ["192.0.2.1", "2001:db8::/32"]);
/// let e = palisade_rules::parse_element_lines("new.txt", "192.0.2.1\n\n  300.1.1.1\n").unwrap_err();
/// assert!(e[0].to_string().starts_with("new.txt:3:3: "), "{}", e[0]);
/// ```
pub fn parse_element_lines(name: &str, text: &str) -> Result<Vec<String>, Vec<Diagnostic>> {
    let mut out = Vec::new();
    let errors = parse_file_elements("elements", name, text.as_bytes(), |_, t| {
        out.push(t.to_owned());
        Ok(())
    });
    let errors: Vec<Diagnostic> = errors
        .into_iter()
        .map(|mut d| {
            d.message = d.message.trim_start_matches("elements: ").to_owned();
            d
        })
        .collect();
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// What a set change does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetOp {
    /// Add elements (already present ones are skipped).
    Add,
    /// Remove elements (each must be listed in the set's file).
    Del,
}

impl SetOp {
    /// `"add"` or `"del"`.
    ///
    /// ```
    /// assert_eq!(palisade_rules::SetOp::Del.as_str(), "del");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            SetOp::Add => "add",
            SetOp::Del => "del",
        }
    }
}

/// Why a set change was refused; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetChangeError {
    /// No set of that name.
    UnknownSet {
        /// The name asked for.
        set: String,
    },
    /// The set has no file to write the change through to.
    NoFile {
        /// The set.
        set: String,
    },
    /// Elements that are not valid for the set (each with its cause).
    BadElements {
        /// The set.
        set: String,
        /// (element as given, why).
        errors: Vec<(String, String)>,
    },
    /// The set file would pass [`MAX_SET_FILE_BYTES`].
    TooBig {
        /// The set.
        set: String,
        /// The size it would have.
        bytes: usize,
    },
}

impl fmt::Display for SetChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetChangeError::UnknownSet { set } => write!(f, "no set \"{set}\" in the active rule set"),
            SetChangeError::NoFile { set } => write!(
                f,
                "set \"{set}\" has no file to write the change through to (give its [[set]] a `file`)"
            ),
            SetChangeError::BadElements { set, errors } => {
                for (i, (el, why)) in errors.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "set \"{set}\": element \"{el}\": {why}")?;
                }
                Ok(())
            }
            SetChangeError::TooBig { set, bytes } => write!(
                f,
                "set \"{set}\": its file would be {bytes} bytes, more than the limit of {MAX_SET_FILE_BYTES} bytes (MAX_SET_FILE_BYTES)"
            ),
        }
    }
}

impl std::error::Error for SetChangeError {}

/// A set change applied to a loaded rule set: the new generation's rule set
/// (the rule file unchanged, one set and its file changed).
#[derive(Clone, Debug)]
pub struct SetChange {
    /// The new generation, as if loaded with the new set file.
    pub loaded: crate::Loaded,
    /// Index of the changed set in `loaded.ruleset.sets`.
    pub set: usize,
    /// The set file's new bytes (also in `loaded.files`).
    pub file: CompanionFile,
    /// How many elements were added or removed (0: nothing to do).
    pub changed: usize,
    /// The elements added or removed.
    pub touched: SetElements,
}

/// Applies `op` with `elements` to set `set` of `loaded`, without touching
/// any other set: the new elements are appended to the set file (or the
/// lines listing removed ones dropped), the set's list updated, the digests
/// recomputed. A bad element refuses the whole change, naming each bad one.
///
/// ```
/// use palisade_rules::{change_set, KeptFiles, SetOp};
/// let rules = b"version = 1\n[[set]]\nname = \"bl\"\nfile = \"bl.txt\"\n[[acl]]\nname = \"a\"\n[[acl.rule]]\naction = \"deny\"\nsrc = \"@bl\"\n";
/// let files = KeptFiles::new([("bl.txt".into(), b"10.0.0.0/8\n".to_vec())]);
/// let loaded = palisade_rules::parse_with("r.toml", rules, &files).unwrap();
/// let ch = change_set(&loaded, "bl", SetOp::Add, &["192.0.2.1".into()]).unwrap();
/// assert_eq!(ch.file.bytes.as_slice(), b"10.0.0.0/8\n192.0.2.1\n");
/// assert_eq!(ch.loaded.ruleset.sets[0].elements.len(), 2);
/// assert_ne!(ch.loaded.digest, loaded.digest);
/// let bad = change_set(&loaded, "bl", SetOp::Add, &["22".into()]).unwrap_err();
/// assert!(bad.to_string().contains("element \"22\""), "{bad}");
/// ```
pub fn change_set(
    loaded: &crate::Loaded,
    set: &str,
    op: SetOp,
    elements: &[String],
) -> Result<SetChange, SetChangeError> {
    let unknown = || SetChangeError::UnknownSet { set: set.to_owned() };
    let index = loaded
        .ruleset
        .sets
        .iter()
        .position(|s| s.name == set)
        .ok_or_else(unknown)?;
    let def = &loaded.ruleset.sets[index];
    let no_file = || SetChangeError::NoFile { set: set.to_owned() };
    let fref = def.file.as_ref().ok_or_else(no_file)?;
    let old = loaded
        .files
        .iter()
        .find(|f| f.name == fref.name)
        .ok_or_else(no_file)?;
    let kind = def.elements.kind();
    // A file that backs several sets changes them all: that is a reload, not a set change.
    for (i, other) in loaded.ruleset.sets.iter().enumerate() {
        if i != index && other.file.as_ref().is_some_and(|f| f.name == old.name) {
            return Err(SetChangeError::BadElements {
                set: set.to_owned(),
                errors: vec![(
                    elements.first().cloned().unwrap_or_default(),
                    format!(
                        "{} also backs set \"{}\": change it by a reload of the rule file",
                        old.name, other.name
                    ),
                )],
            });
        }
    }

    // Parse every element; all must be valid, or nothing changes.
    let mut errors = Vec::new();
    let mut parsed: Vec<(Element, &str)> = Vec::new();
    for text in elements {
        let t = text.trim();
        match parse_element(t) {
            Ok(el) if el.kind() == kind => parsed.push((el, t)),
            Ok(_) => errors.push((
                text.clone(),
                format!(
                    "the set holds {}",
                    if kind == SetKind::Ports {
                        "ports"
                    } else {
                        "addresses"
                    }
                ),
            )),
            Err(why) => errors.push((text.clone(), why)),
        }
    }
    if op == SetOp::Del {
        for (el, t) in &parsed {
            // Listed in the set but not inline: listed in the file.
            let (listed, inline) = match (el, &def.elements, &def.inline) {
                (Element::Addr(a), SetElements::Addresses(all), SetElements::Addresses(inl)) => {
                    (all.lists(a), inl.lists(a))
                }
                (Element::Port(r), SetElements::Ports(all), SetElements::Ports(inl)) => {
                    (all.lists(r), inl.lists(r))
                }
                _ => (false, false),
            };
            if inline {
                errors.push((
                    t.to_string(),
                    format!(
                        "it is listed in the rule file's `elements`, not only in {}; edit the rule file",
                        fref.name
                    ),
                ));
            } else if !listed {
                errors.push((
                    t.to_string(),
                    format!("it is not listed in the set (nor in {})", fref.name),
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(SetChangeError::BadElements {
            set: set.to_owned(),
            errors,
        });
    }

    let mut new_def = def.clone();
    let file: CompanionFile;
    let changed;
    let touched: Vec<Element>;
    match op {
        SetOp::Add => {
            // Only elements not yet listed are appended (a repeated add changes nothing).
            let mut fresh: Vec<(Element, &str)> = Vec::new();
            match &mut new_def.elements {
                SetElements::Addresses(list) => {
                    let l = Arc::make_mut(list);
                    for (el, t) in &parsed {
                        if let Element::Addr(a) = el {
                            if !l.lists(a) && !fresh.iter().any(|(e, _)| e == el) {
                                fresh.push((*el, t));
                            }
                        }
                    }
                    l.extend(fresh.iter().filter_map(|(e, _)| match e {
                        Element::Addr(a) => Some(*a),
                        Element::Port(_) => None,
                    }));
                }
                SetElements::Ports(list) => {
                    let l = Arc::make_mut(list);
                    for (el, t) in &parsed {
                        if let Element::Port(r) = el {
                            if !l.lists(r) && !fresh.iter().any(|(e, _)| e == el) {
                                fresh.push((*el, t));
                            }
                        }
                    }
                    l.extend(fresh.iter().filter_map(|(e, _)| match e {
                        Element::Port(r) => Some(*r),
                        Element::Addr(_) => None,
                    }));
                }
            }
            changed = fresh.len();
            touched = fresh.iter().map(|(e, _)| *e).collect();
            let mut more = Vec::with_capacity(fresh.iter().map(|(_, t)| t.len() + 1).sum::<usize>() + 1);
            if !old.bytes.is_empty() && !old.bytes.ends_with(b"\n") && changed > 0 {
                more.push(b'\n');
            }
            for (_, t) in &fresh {
                more.extend_from_slice(t.as_bytes());
                more.push(b'\n');
            }
            file = if changed == 0 {
                old.clone()
            } else {
                old.appended(&more)
            };
        }
        SetOp::Del => {
            let gone: std::collections::HashSet<Element> = parsed.iter().map(|(e, _)| *e).collect();
            match &mut new_def.elements {
                SetElements::Addresses(list) => {
                    let g: Vec<Prefix> = gone
                        .iter()
                        .filter_map(|e| match e {
                            Element::Addr(a) => Some(*a),
                            Element::Port(_) => None,
                        })
                        .collect();
                    Arc::make_mut(list).remove_all(&g);
                }
                SetElements::Ports(list) => {
                    let g: Vec<PortRange> = gone
                        .iter()
                        .filter_map(|e| match e {
                            Element::Port(r) => Some(*r),
                            Element::Addr(_) => None,
                        })
                        .collect();
                    Arc::make_mut(list).remove_all(&g);
                }
            }
            changed = gone.len();
            touched = gone.iter().copied().collect();
            // Drop every line that lists a removed element; keep the rest byte for byte.
            let mut bytes = Vec::with_capacity(old.bytes.len());
            for line in old.bytes.split_inclusive(|&b| b == b'\n') {
                let text = std::str::from_utf8(line).unwrap_or("");
                let el = text.split('#').next().unwrap_or("").trim();
                let drop = !el.is_empty() && parse_element(el).is_ok_and(|e| gone.contains(&e));
                if !drop {
                    bytes.extend_from_slice(line);
                }
            }
            file = CompanionFile::hashed(old.name.clone(), old.path.clone(), Arc::new(bytes));
        }
    }
    if file.bytes.len() > MAX_SET_FILE_BYTES {
        return Err(SetChangeError::TooBig {
            set: set.to_owned(),
            bytes: file.bytes.len(),
        });
    }
    if let Some(f) = new_def.file.as_mut() {
        f.digest = file.digest;
        f.elements = match op {
            SetOp::Add => f.elements + changed,
            SetOp::Del => f.elements.saturating_sub(changed),
        };
    }
    let mut new = loaded.clone();
    new.ruleset.sets[index] = new_def;
    for f in &mut new.files {
        if f.name == file.name {
            *f = file.clone();
        }
    }
    new.digest = generation_digest(new.rules_digest, &new.files);
    let touched = match kind {
        SetKind::Addresses => SetElements::Addresses(Arc::new(AddrList::from_prefixes(
            touched.iter().filter_map(|e| match e {
                Element::Addr(a) => Some(*a),
                Element::Port(_) => None,
            }),
        ))),
        SetKind::Ports => SetElements::Ports(Arc::new(PortList::from_ranges(touched.iter().filter_map(
            |e| match e {
                Element::Port(r) => Some(*r),
                Element::Addr(_) => None,
            },
        )))),
    };
    Ok(SetChange {
        loaded: new,
        set: index,
        file,
        changed,
        touched,
    })
}
