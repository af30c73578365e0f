//! ClassBench filter and trace import from arbitrary text: no panic; what
//! imports builds a compiled classifier that answers every trace header as
//! the reference does; a trace line written back reads as the same key, and
//! a rule written back as a filter line reads as the same rule.
//!
//! Input: filters, then a line `%%`, then a trace (either part may be
//! missing). The first byte picks the flags mode.
//!
//! Shared by the fuzz target `classbench` and the replay test
//! crates/classify/tests/fuzz_corpus_classbench.rs.

use palisade_classify::classbench::{
    format_filter_line, format_trace_line, parse_filter_line, parse_filters, parse_trace, parse_trace_line,
    FilterOptions, FlagsMode,
};
use palisade_classify::{BuildConfig, Classifier, CompiledClassifier, LinearClassifier, NO_MATCH};

/// Runs one input through every check; panics on a disagreement.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let (filters, trace) = match text.split_once("\n%%\n") {
        Some((f, t)) => (f, t),
        None => (&*text, ""),
    };
    let options = FilterOptions {
        flags: if mode & 1 == 0 {
            FlagsMode::Ignore
        } else {
            FlagsMode::Match
        },
    };
    let rules = parse_filters(filters, &options);
    let entries = parse_trace(trace);
    // Lines that fail alone must make the whole parse fail, with a line number in range.
    if let Err(e) = &rules {
        assert!(e.line >= 1 && e.line <= filters.lines().count(), "{e}");
    }
    if let Err(e) = &entries {
        assert!(e.line >= 1 && e.line <= trace.lines().count(), "{e}");
    }
    let entries = entries.unwrap_or_default();
    for e in &entries {
        let line = format_trace_line(&e.key, e.tag);
        let back = parse_trace_line(&line).expect("a written trace line reads back");
        assert_eq!(back.key, e.key, "{line}");
        assert_eq!(back.tag, e.tag, "{line}");
    }
    let Ok(rules) = rules else { return };
    for rule in &rules {
        if let Some(line) = format_filter_line(rule) {
            let back = parse_filter_line(&line, &FilterOptions::default())
                .expect("a written filter line reads back");
            assert_eq!(back, *rule, "{line}");
        }
    }
    let reference = LinearClassifier::new(rules.clone());
    let config = BuildConfig::default().with_memory_cap(16 << 20);
    let Ok(compiled) = CompiledClassifier::build(&rules, &config) else {
        return;
    };
    let keys: Vec<_> = entries.iter().map(|e| e.key).collect();
    let mut batch = vec![NO_MATCH; keys.len()];
    compiled.classify_batch(&keys, &mut batch);
    for (k, got) in keys.iter().zip(&batch) {
        let want = reference.classify(k);
        assert_eq!(compiled.classify(k), want, "{k:?}");
        assert_eq!(*got, want, "batch {k:?}");
    }
}
