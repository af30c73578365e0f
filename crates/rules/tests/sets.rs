//! Named sets in the rule language: definitions, set files, references,
//! every error at its `file:line:col` (the set file's own for its lines),
//! the digest over the set files, and set changes.

use palisade_classify::SetField;
use palisade_rules::{
    change_set, parse_with, Diagnostic, KeptFiles, Loaded, SetChangeError, SetElements, SetOp, Severity,
};

const HEAD: &str = "version = 1\n";

fn files(list: &[(&str, &str)]) -> KeptFiles {
    KeptFiles::new(list.iter().map(|(n, t)| (n.to_string(), t.as_bytes().to_vec())))
}

fn ok(text: &str, set_files: &[(&str, &str)]) -> Loaded {
    parse_with("dir/r.toml", text.as_bytes(), &files(set_files)).unwrap_or_else(|e| {
        panic!(
            "{}",
            e.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
        )
    })
}

fn errors(text: &str, set_files: &[(&str, &str)]) -> Vec<String> {
    match parse_with("dir/r.toml", text.as_bytes(), &files(set_files)) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.iter().map(Diagnostic::to_string).collect(),
    }
}

/// An ACL bound to a port (so no "bound nowhere" warning), its rules last.
fn acl(rules: &str) -> String {
    format!("[[port]]\nname = \"p\"\n[[bind]]\nacl = \"a\"\nport = \"p\"\n[[acl]]\nname = \"a\"\n{rules}")
}

#[test]
fn sets_mix_families_merge_duplicates_and_become_set_tests() {
    let text = format!(
        "{HEAD}[[set]]\nname = \"bl\"\nelements = [\"203.0.113.0/24\", \"2001:db8:bad::/48\", \"203.0.113.7\"]\nfile = \"bl.txt\"\n\
         [[set]]\nname = \"ssh\"\nelements = [22, \"2222-2230\"]\n{}",
        acl("[[acl.rule]]\naction = \"deny\"\nsrc = \"@bl\"\n\
             [[acl.rule]]\naction = \"deny\"\ndst = [\"!@bl\"]\nproto = \"tcp\"\ndst_port = \"@ssh\"\n\
             [[acl.rule]]\naction = \"permit\"\nsrc = \"@bl\"\n")
    );
    let loaded = ok(
        &text,
        &[(
            "bl.txt",
            "# feed\n203.0.113.7\n198.51.100.0/24   # dup-free\n\n2001:db8:bad::/48\n",
        )],
    );
    let rs = &loaded.ruleset;
    assert_eq!(rs.sets.len(), 2);
    let SetElements::Addresses(bl) = &rs.sets[0].elements else {
        panic!("bl holds addresses")
    };
    assert_eq!(
        (bl.len(), bl.v4_len(), bl.v6_len()),
        (4, 3, 1),
        "duplicates listed once"
    );
    assert_eq!(rs.sets[0].file.as_ref().unwrap().elements, 3);
    assert_eq!(
        rs.sets[0].file.as_ref().unwrap().path,
        std::path::Path::new("dir/bl.txt")
    );
    assert_eq!(rs.sets[1].elements.len(), 2);
    // Three distinct (set, field) pairs: bl in src, bl in dst, ssh in dst_port.
    let tests: Vec<(usize, SetField)> = rs.set_tests.iter().map(|t| (t.set, t.field)).collect();
    assert_eq!(
        tests,
        [(0, SetField::Src), (0, SetField::Dst), (1, SetField::DstPort)]
    );
    let r = &rs.acls[0].rules;
    assert_eq!((r[0].matcher.sets.member, r[0].matcher.sets.non_member), (1, 0));
    assert_eq!((r[1].matcher.sets.member, r[1].matcher.sets.non_member), (4, 2));
    assert!(r[1].matcher.sets.needs_ports && !r[0].matcher.sets.needs_ports);
    assert!(
        r[0].matcher.src.is_empty(),
        "a reference is not expanded into the rule"
    );
    assert!(r[0].matcher.needs_ip());
    // The same test repeated is a shadowed rule.
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0]
            .message
            .contains("rule 3 is shadowed by rule 1"),
        "{}",
        loaded.warnings[0]
    );
    assert_eq!(loaded.files.len(), 1);
}

/// (rule file, set files, the expected start of one error).
type Case = (String, Vec<(&'static str, &'static str)>, &'static str);

#[test]
fn each_error_names_its_place() {
    let set = |body: &str| format!("{HEAD}[[set]]\nname = \"s\"\n{body}");
    let use_src = acl("[[acl.rule]]\naction = \"deny\"\nsrc = \"@s\"\n");
    let cases: Vec<Case> = vec![
        (
            format!("{}{}", set("elements = [\"10.0.0.0/8\"]\n"), acl("[[acl.rule]]\naction = \"deny\"\nsrc = \"@sx\"\n")),
            vec![],
            "dir/r.toml:14:7: acl \"a\" rule 1: src: unknown set \"sx\" (did you mean \"@s\"?)",
        ),
        (
            format!("{}{use_src}", set("elements = [\"10.0.0.0/8\", 22]\n")),
            vec![],
            "dir/r.toml:4:27: set \"s\": 22 is a port, but the set holds addresses (its first element is 10.0.0.0/8)",
        ),
        (
            format!("{}{use_src}", set("file = \"s.txt\"\n")),
            vec![("s.txt", "10.0.0.0/8\n# fine\n  10.1.2.3/16\n")],
            "dir/s.txt:3:3: set \"s\": prefix \"10.1.2.3/16\" has host bits set (did you mean 10.1.0.0/16?)",
        ),
        (
            format!("{}{use_src}", set("file = \"s.txt\"\n")),
            vec![("s.txt", "10.0.0.0/8\n\n80\n")],
            "dir/s.txt:3:1: set \"s\": 80 is a port, but the set holds addresses (its first element is 10.0.0.0/8)",
        ),
        (
            format!("{}{use_src}", set("file = \"s.txt\"\n")),
            vec![("s.txt", "10.0.0.0/8 10.1.0.0/16\n")],
            "dir/s.txt:1:12: set \"s\": one element a line, but \"10.1.0.0/16\" follows 10.0.0.0/8",
        ),
        (
            format!("{}{use_src}", set("file = \"s.txt\"\n")),
            vec![("s.txt", "10.0.0.0/8\nbogus\n")],
            "dir/s.txt:2:1: set \"s\": \"bogus\" is not an address, a prefix, a port or a port range",
        ),
        (
            format!("{}{use_src}", set("file = \"missing.txt\"\n")),
            vec![],
            "dir/r.toml:4:8: set \"s\": file \"missing.txt\" (dir/missing.txt): cannot read:",
        ),
        (
            format!("{}{}", set("elements = [\"10.0.0.0/8\"]\n"), acl("[[acl.rule]]\naction = \"deny\"\nproto = \"tcp\"\ndst_port = \"@s\"\n")),
            vec![],
            "dir/r.toml:15:12: acl \"a\" rule 1: dst_port: set \"s\" holds addresses, but dst_port needs ports",
        ),
        (
            format!("{}{}", set("elements = [\"10.0.0.0/8\"]\n"), acl("[[acl.rule]]\naction = \"deny\"\nsrc = [\"10.0.0.0/8\", \"@s\"]\n")),
            vec![],
            "dir/r.toml:14:22: acl \"a\" rule 1: src: a set reference stands alone in its key (put the other elements into the set)",
        ),
        (
            format!("{}{use_src}[[set]]\nname = \"s\"\nelements = []\n", set("elements = [\"10.0.0.0/8\"]\n")),
            vec![],
            "dir/r.toml:16:8: duplicate set \"s\" (first defined at 3:8)",
        ),
        (
            format!("{}{use_src}", set("")),
            vec![],
            "dir/r.toml:2:1: set \"s\": give `elements`, `file` or both",
        ),
        (
            format!("{}[[rescue]]\nsrc = \"@s\"\n", set("elements = [\"10.0.0.0/8\"]\n")),
            vec![],
            "dir/r.toml:5:1: rescue 1: a rescue rule cannot use a set",
        ),
        (
            format!("{}{}", set("kind = \"port\"\nelements = [\"10.0.0.0/8\"]\n"), acl("")),
            vec![],
            "dir/r.toml:5:13: set \"s\": 10.0.0.0/8 is an address, but the set holds ports (kind = \"port\")",
        ),
        (
            format!("{}{}", set("elements = [\"1-2-3\"]\n"), acl("")),
            vec![],
            "dir/r.toml:4:13: set \"s\": elements: port \"2-3\" is not a number 0-65535",
        ),
        (
            format!("{}{}", set("elements = [22]\n"), acl("[[acl.rule]]\naction = \"deny\"\nproto = \"icmp\"\nsrc_port = \"@s\"\n")),
            vec![],
            "dir/r.toml:15:12: acl \"a\" rule 1: src_port needs proto tcp or udp (the only ports the parser reads), but proto is icmp: the rule can never match",
        ),
    ];
    let mut wrong = Vec::new();
    for (text, set_files, want) in cases {
        let got = errors(&text, &set_files);
        if !got.iter().any(|e| e.starts_with(want)) {
            wrong.push(format!("want {want}\ngot {got:#?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn an_empty_set_takes_the_kind_of_its_use_and_unused_sets_are_warned() {
    let text = format!(
        "{HEAD}[[set]]\nname = \"bans\"\nfile = \"bans.txt\"\n[[set]]\nname = \"spare\"\nelements = []\n{}",
        acl("[[acl.rule]]\naction = \"deny\"\nproto = \"udp\"\nsrc_port = \"@bans\"\n")
    );
    let loaded = ok(&text, &[("bans.txt", "# nothing banned yet\n")]);
    assert!(matches!(loaded.ruleset.sets[0].elements, SetElements::Ports(_)));
    let w: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(w, ["dir/r.toml:6:8: warning: set \"spare\" is used by no rule"]);
    assert_eq!(loaded.warnings[0].severity, Severity::Warning);
}

#[test]
fn at_most_32_set_tests() {
    let mut text = HEAD.to_string();
    for i in 0..17 {
        text.push_str(&format!(
            "[[set]]\nname = \"s{i}\"\nelements = [\"10.0.0.{i}\"]\n"
        ));
    }
    text.push_str("[[acl]]\nname = \"a\"\n");
    for i in 0..17 {
        text.push_str(&format!(
            "[[acl.rule]]\naction = \"deny\"\nsrc = \"@s{i}\"\ndst = \"!@s{i}\"\n"
        ));
    }
    let got = errors(&text, &[]);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].contains("src: set \"s16\" in src would be set test 33 of the rule set, more than the limit of 32 (MAX_SET_TESTS)"),
        "{}",
        got[0]
    );
}

#[test]
fn the_digest_covers_every_set_file() {
    let text = format!(
        "{HEAD}[[set]]\nname = \"bl\"\nfile = \"bl.txt\"\n{}",
        acl("[[acl.rule]]\naction = \"deny\"\nsrc = \"@bl\"\n")
    );
    let a = ok(&text, &[("bl.txt", "10.0.0.0/8\n")]);
    let b = ok(&text, &[("bl.txt", "10.0.0.0/8\n192.0.2.1\n")]);
    assert_eq!(a.rules_digest, b.rules_digest, "the rule file is the same");
    assert_ne!(a.digest, b.digest, "the set file changed, so the generation did");
    assert_eq!(a.rules_digest, palisade_rules::Digest::of(text.as_bytes()));
    assert_ne!(a.digest, a.rules_digest);
    // Without set files, the digest stays the rule file's SHA-256 (check's contract).
    let plain = ok(&format!("{HEAD}{}", acl("")), &[]);
    assert_eq!(plain.digest, plain.rules_digest);
}

#[test]
fn set_changes_rewrite_the_file_and_refuse_bad_elements() {
    let text = format!(
        "{HEAD}[[set]]\nname = \"bl\"\nelements = [\"192.0.2.0/24\"]\nfile = \"bl.txt\"\n{}",
        acl("[[acl.rule]]\naction = \"deny\"\nsrc = \"@bl\"\n")
    );
    let loaded = ok(
        &text,
        &[("bl.txt", "10.0.0.0/8 # first\n10.1.0.0/16\n2001:db8::/32")],
    );
    let add = change_set(
        &loaded,
        "bl",
        SetOp::Add,
        &["198.51.100.7".into(), "10.1.0.0/16".into()],
    )
    .unwrap();
    assert_eq!(add.changed, 1, "10.1.0.0/16 was listed already");
    assert_eq!(
        std::str::from_utf8(&add.file.bytes).unwrap(),
        "10.0.0.0/8 # first\n10.1.0.0/16\n2001:db8::/32\n198.51.100.7\n"
    );
    // The changed generation equals a fresh parse of the new file.
    let fresh = ok(
        &text,
        &[("bl.txt", std::str::from_utf8(&add.file.bytes).unwrap())],
    );
    assert_eq!(add.loaded.digest, fresh.digest);
    assert_eq!(add.loaded.ruleset, fresh.ruleset);

    let del = change_set(
        &add.loaded,
        "bl",
        SetOp::Del,
        &["10.0.0.0/8".into(), "2001:db8::/32".into()],
    )
    .unwrap();
    assert_eq!(
        std::str::from_utf8(&del.file.bytes).unwrap(),
        "10.1.0.0/16\n198.51.100.7\n"
    );
    let fresh = ok(
        &text,
        &[("bl.txt", std::str::from_utf8(&del.file.bytes).unwrap())],
    );
    assert_eq!(del.loaded.ruleset, fresh.ruleset);
    assert_eq!(del.loaded.digest, fresh.digest);

    let SetChangeError::BadElements { errors, .. } = change_set(
        &loaded,
        "bl",
        SetOp::Add,
        &["10.9.9.9".into(), "10.0.0.300".into(), "53".into()],
    )
    .unwrap_err() else {
        panic!("bad elements")
    };
    let named: Vec<&str> = errors.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(named, ["10.0.0.300", "53"], "{errors:?}");
    let e = change_set(&loaded, "bl", SetOp::Del, &["192.0.2.0/24".into()]).unwrap_err();
    assert!(
        e.to_string().contains("listed in the rule file's `elements`"),
        "{e}"
    );
    let e = change_set(&loaded, "bl", SetOp::Del, &["10.0.0.0/9".into()]).unwrap_err();
    assert!(e.to_string().contains("not listed in the set"), "{e}");
    let e = change_set(&loaded, "nope", SetOp::Add, &["10.0.0.1".into()]).unwrap_err();
    assert_eq!(e.to_string(), "no set \"nope\" in the active rule set");
    let inline_only = ok(
        &format!(
            "{HEAD}[[set]]\nname = \"i\"\nelements = [\"10.0.0.1\"]\n{}",
            acl("[[acl.rule]]\naction = \"deny\"\nsrc = \"@i\"\n")
        ),
        &[],
    );
    let e = change_set(&inline_only, "i", SetOp::Add, &["10.0.0.2".into()]).unwrap_err();
    assert!(matches!(e, SetChangeError::NoFile { .. }), "{e}");
}
