//! `palisade check`: parse, validate, compile, run the `[[expect]]` vectors.

use std::path::PathBuf;
use std::process::ExitCode;

use palisade_engine::policy::Policy;
use palisade_rules::{LoadError, Loaded};

/// Arguments of `palisade check`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The rule file.
    pub rules: PathBuf,
    /// Warnings fail too (exit 1): a shadowed rule, an unbound ACL, an SVI for
    /// a VLAN no port carries.
    #[arg(long)]
    pub strict: bool,
}

/// Loads and compiles a rule file for the commands that need a policy;
/// prints every problem to stderr and returns the exit code on failure
/// (1 invalid, 2 unreadable).
pub fn load_policy(path: &std::path::Path) -> Result<(Loaded, Policy), ExitCode> {
    let loaded = match palisade_rules::load(path) {
        Ok(l) => l,
        Err(e @ LoadError::Io { .. }) => {
            eprintln!("{e}");
            return Err(ExitCode::from(2));
        }
        Err(e) => {
            eprintln!("{e}");
            return Err(ExitCode::from(1));
        }
    };
    match Policy::compile(&loaded.ruleset) {
        Ok(p) => Ok((loaded, p)),
        Err(e) => {
            eprintln!("{}: {e}", loaded.file);
            Err(ExitCode::from(1))
        }
    }
}

/// Runs `palisade check`.
pub fn run(args: Args) -> ExitCode {
    let loaded = match palisade_rules::load(&args.rules) {
        Ok(l) => l,
        Err(e @ LoadError::Io { .. }) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
        Err(LoadError::Invalid(diags)) => {
            for d in &diags {
                eprintln!("{d}");
            }
            eprintln!(
                "{}: invalid: {} error{}",
                args.rules.display(),
                diags.len(),
                plural(diags.len())
            );
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let policy = match Policy::compile(&loaded.ruleset) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: {e}", loaded.file);
            eprintln!("{}: invalid: 1 error", loaded.file);
            return ExitCode::from(1);
        }
    };
    let failures = policy.check_expects(&loaded);
    for f in &failures {
        eprintln!("{f}");
    }
    let rs = &loaded.ruleset;
    let expects = rs.expects.len();
    let verdict = match (failures.is_empty(), args.strict && !loaded.warnings.is_empty()) {
        (false, _) => "invalid",
        (true, true) => "valid, but refused by --strict (warnings)",
        (true, false) => "valid",
    };
    println!("{}: {verdict}", loaded.file);
    println!("  version:    {}", rs.version);
    if let Some(r) = &rs.requires {
        println!("  requires:   {r} (engine {})", palisade_rules::ENGINE_VERSION);
    }
    println!("  ports:      {}", rs.ports.len());
    println!("  interfaces: {}", rs.interfaces.len());
    println!("  acls:       {}", rs.acls.len());
    println!("  rules:      {}", policy.rule_count());
    println!("  bindings:   {}", rs.bindings.len());
    println!("  rescue:     {}", policy.rescue_count());
    println!(
        "  expects:    {expects} ({} passed, {} failed)",
        expects - failures.len(),
        failures.len()
    );
    if !rs.sets.is_empty() {
        println!("  sets:       {}", rs.sets.len());
        for set in &rs.sets {
            let file = set.file.as_ref().map_or(String::new(), |f| {
                format!(", file {} (sha256 {})", f.name, f.digest)
            });
            println!(
                "    {}: {} {} element{}{file}",
                set.name,
                set.elements.len(),
                set.elements.kind().as_str(),
                plural(set.elements.len())
            );
        }
        let tests = policy.set_tests();
        let anonymous = tests.iter().filter(|t| t.anonymous).count();
        println!(
            "  set tests:  {} of {} ({anonymous} for rules' long lists)",
            tests.len(),
            palisade_rules::MAX_SET_TESTS
        );
    }
    println!("  warnings:   {}", loaded.warnings.len());
    if loaded.files.is_empty() {
        println!("digest: {}", loaded.digest);
    } else {
        println!("digest: {} (the rule file and its set files)", loaded.digest);
        println!("rules digest: {}", loaded.rules_digest);
    }
    if !failures.is_empty() {
        eprintln!(
            "{}: invalid: {} [[expect]] vector{} failed",
            loaded.file,
            failures.len(),
            plural(failures.len())
        );
        return ExitCode::from(1);
    }
    if args.strict && !loaded.warnings.is_empty() {
        eprintln!(
            "{}: refused by --strict: {} warning{}",
            loaded.file,
            loaded.warnings.len(),
            plural(loaded.warnings.len())
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
