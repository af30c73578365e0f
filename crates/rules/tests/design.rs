//! The rule-language example of `../shared/DESIGN.md` (the contract) parses.

#[test]
fn design_example_is_a_valid_rule_set() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/DESIGN.md");
    let Ok(text) = std::fs::read_to_string(path) else {
        println!("SKIPPED: ../shared/DESIGN.md not present");
        return;
    };
    let start = text.find("```toml\n").expect("DESIGN.md has a toml block") + "```toml\n".len();
    let block = &text[start..start + text[start..].find("```").unwrap()];
    let loaded = palisade_rules::parse("DESIGN.md", block.as_bytes()).unwrap_or_else(|e| {
        panic!(
            "{}",
            e.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
        )
    });
    let rs = &loaded.ruleset;
    assert_eq!((rs.ports.len(), rs.interfaces.len(), rs.acls.len()), (2, 2, 1));
    assert_eq!(rs.acls[0].rules[0].id.as_deref(), Some("dns"));
    assert_eq!(rs.expects.len(), 1);
    assert_eq!(rs.rescue.len(), 1);
}
