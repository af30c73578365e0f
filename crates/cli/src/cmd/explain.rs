//! `palisade explain RULES --port P [--vlan V] [--route FROM:TO] [--json] 'PACKET'`.
//!
//! Walks one packet through every stage of the policy and says, per stage,
//! which ACL ran (or that none is bound), which rule matched and where it is
//! written in the rule file. PACKET reads like
//! `tcp 10.0.0.1:1234 -> 192.0.2.1:443`, `udp [2001:db8::1]:53 -> [2001:db8::2]:53`,
//! `icmp 10.0.0.1 -> 10.0.0.2 type 8 code 0`, optionally followed by
//! `flags syn,ack` (a TCP packet without flags is a SYN) and `state S` (its
//! flow state: new, established, related, invalid; without it, the state the
//! packet has when its flow has no entry, which explain says it assumed);
//! frames without an IP header as `arp 10.0.0.1 -> 10.0.0.2` or
//! `ethertype 0x88cc`; and any of them followed by `malformed` (a frame that
//! cannot be parsed far enough). Every packet an `[[expect]]` can describe
//! can be explained. `--vlan V` sends it tagged with VLAN V (default:
//! untagged, so it takes the port's VLAN).
//!
//! A rule that tests sets says how the packet fared in each:
//! `src 203.0.113.9 in set "blocklist"`, `dst_port 22 not in set "ssh"`.
//!
//! `--json` prints one object: `verdict`, `stage`, `acl` (null when no ACL
//! decided), `rule` (null when no rule decided), `sets` (the deciding
//! rule's set tests, as above), `packet`, `state`, `state_assumed` (true
//! when the packet did not give it), `opens_flow` (a keep_state rule decided
//! a stage of a permitted new packet), `vlan` and `stages` (one entry per
//! stage on the path).
//!
//! Exit codes: 0 explained (whatever the verdict), 1 invalid rule file,
//! 2 usage (bad packet, unknown port or interface).

use std::path::PathBuf;
use std::process::ExitCode;

use palisade_engine::policy::{Context, Policy, RuleRef, Stage, StageEvent, Verdict};
use palisade_packet::{FlowKey, FlowState};
use palisade_rules::Loaded;

use crate::cmd::check::load_policy;
use crate::cmd::classify::{context, json_opt};

/// Arguments of `palisade explain`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The rule file.
    pub rules: PathBuf,
    /// The ingress port.
    #[arg(long)]
    pub port: String,
    /// Send the packet tagged with this VLAN (0 = priority-tagged).
    #[arg(long)]
    pub vlan: Option<u16>,
    /// Route the packet between two L3 interfaces: `FROM:TO`.
    #[arg(long, value_name = "FROM:TO")]
    pub route: Option<String>,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// The packet, quoted. Examples: 'tcp 10.0.0.1:1234 -> 192.0.2.1:443',
    /// 'tcp 10.0.0.1:1234 -> 192.0.2.1:443 flags syn,ack',
    /// 'udp [2001:db8::1]:53 -> [2001:db8::2]:53', 'icmp 10.0.0.1 -> 10.0.0.2 type 8 code 0',
    /// 'arp 10.0.0.1 -> 10.0.0.2', 'ethertype 0x88cc', 'udp 10.0.0.1 -> 10.0.0.2:53 malformed'.
    /// After the addresses: type T, code C, flags F, vlan V, fragment first|non-first, dscp D, malformed.
    #[arg(allow_hyphen_values = true, value_name = "PACKET")]
    pub packet: String,
}

/// One line of the walk.
struct Step {
    stage: &'static str,
    target: String,
    acl: Option<String>,
    rule: Option<String>,
    verdict: Option<&'static str>,
    note: String,
}

/// Runs `palisade explain`.
pub fn run(args: Args) -> ExitCode {
    let (loaded, policy) = match load_policy(&args.rules) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut key = match palisade_rules::parse_packet_spec(&args.packet) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("palisade explain: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(v) = args.vlan {
        if v > 4094 {
            eprintln!("palisade explain: --vlan {v} is outside 0-4094");
            return ExitCode::from(2);
        }
        key = key.with_vlan(v);
    }
    let ctx = match context(&policy, &args.port, args.route.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("palisade explain: {e}");
            return ExitCode::from(2);
        }
    };
    let mut events: Vec<StageEvent> = Vec::new();
    let d = policy.evaluate_traced(&key, &ctx, |e| events.push(*e));
    let (vlan, vlan_note) = ingress_vlan(&policy, &key, &ctx);
    let steps = walk(&loaded, &policy, &key, &ctx, vlan, d.stage, &events);
    let acl = policy.acl_name(d.acl);
    let rule = policy.rule_name(&d);
    let sets = policy.set_reasons(d.acl, d.rule, &key);
    let state_given = args
        .packet
        .split_whitespace()
        .any(|w| w.eq_ignore_ascii_case("state"));
    let opener = opening_rule(&loaded, &policy, &key, d.verdict, &events);
    if args.json {
        let stages: Vec<serde_json::Value> = steps
            .iter()
            .map(|s| {
                serde_json::json!({
                    "stage": s.stage,
                    "target": s.target,
                    "acl": json_opt(s.acl.as_deref()),
                    "rule": json_opt(s.rule.as_deref()),
                    "verdict": s.verdict,
                    "note": s.note,
                })
            })
            .collect();
        let obj = serde_json::json!({
            "verdict": d.verdict.as_str(),
            "stage": d.stage.as_str(),
            "acl": json_opt(acl),
            "rule": json_opt(Some(rule)),
            "sets": sets,
            "packet": palisade_rules::format_packet(&key),
            "state": key.flow_state.name(),
            "state_assumed": !state_given,
            "opens_flow": opener.is_some(),
            "port": args.port,
            "vlan": vlan,
            "stages": stages,
        });
        println!("{obj}");
        return ExitCode::SUCCESS;
    }
    println!("packet:  {}", palisade_rules::format_packet(&key));
    println!("state:   {}", state_note(&key, state_given));
    println!("port:    {} ({vlan_note})", args.port);
    if let Some(r) = ctx.route {
        let name = |i| policy.interface_info(i).map_or("?", |x| x.name.as_str());
        println!("route:   {} -> {}", name(r.from), name(r.to));
    } else {
        println!("route:   not routed (bridged within its VLAN)");
    }
    println!();
    for s in &steps {
        let verdict = s.verdict.map_or(String::new(), |v| format!("{v:<6} "));
        let mut line = format!("  {:<12} {:<22} {verdict}", s.stage, s.target);
        if let Some(acl) = &s.acl {
            line.push_str(&format!("acl \"{acl}\""));
            if let Some(rule) = &s.rule {
                line.push_str(&format!(" rule {rule}"));
            }
            line.push(' ');
        }
        line.push_str(&s.note);
        println!("{}", line.trim_end());
    }
    println!();
    let mut decided = format!("verdict: {} (stage {}", d.verdict.as_str(), d.stage.as_str());
    if let Some(acl) = acl {
        decided.push_str(&format!(", acl \"{acl}\""));
    }
    if !rule.is_empty() {
        decided.push_str(&format!(", rule {rule}"));
    }
    for s in &sets {
        decided.push_str(&format!(", {s}"));
    }
    decided.push(')');
    println!("{decided}");
    if let Some(opener) = opener {
        println!("flow:    opens a flow entry ({opener}); its frames both ways are then established");
    }
    ExitCode::SUCCESS
}

/// The packet's flow state, and whether it was given or assumed (and why).
fn state_note(key: &FlowKey, given: bool) -> String {
    let s = key.flow_state;
    if given {
        return format!("{} (given)", s.name());
    }
    let why = match s {
        FlowState::New => "no flow entry, and a packet that may open one",
        FlowState::Invalid => "no flow entry, and a packet that cannot open one",
        _ => "not IP: no flow state",
    };
    format!(
        "{} (assumed: {why}; add `state established` etc. to the packet for another)",
        s.name()
    )
}

/// The keep_state rule that would open a flow for this packet: a new packet,
/// permitted, one of whose stages a keep_state rule decided.
fn opening_rule(
    loaded: &Loaded,
    policy: &Policy,
    key: &FlowKey,
    verdict: Verdict,
    events: &[StageEvent],
) -> Option<String> {
    if key.flow_state != FlowState::New || verdict != Verdict::Permit {
        return None;
    }
    events.iter().find_map(|e| {
        let RuleRef::Rule(i) = e.rule else { return None };
        let rule = loaded.ruleset.acls.get(e.acl as usize)?.rules.get(i as usize)?;
        rule.keep_state.then(|| {
            format!(
                "keep_state: acl \"{}\" rule {} at stage {}",
                policy.acl_name(Some(e.acl)).unwrap_or(""),
                policy.rule_label(Some(e.acl), e.rule),
                e.stage
            )
        })
    })
}

/// The VLAN the policy classifies the packet in, and a note saying why.
fn ingress_vlan(policy: &Policy, key: &FlowKey, ctx: &Context) -> (Option<u16>, String) {
    let Some(port) = policy.port_info(ctx.port) else {
        return (None, "unknown port".into());
    };
    let vid = key.outer_vlan & 0x0fff;
    let trunk = if port.trunk.is_empty() {
        String::new()
    } else {
        format!(
            ", trunk {}",
            port.trunk
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    if key.vlan_count > 0 && vid != 0 {
        (Some(vid), format!("tagged VLAN {vid}{trunk}"))
    } else {
        match port.vlan {
            Some(v) => (
                Some(v),
                format!("untagged: takes the port's access VLAN {v}{trunk}"),
            ),
            None => (None, format!("untagged, the port has no VLAN{trunk}")),
        }
    }
}

/// Rebuilds the walk: each stage's binding (or its absence) and what it said.
fn walk(
    loaded: &Loaded,
    policy: &Policy,
    key: &FlowKey,
    ctx: &Context,
    vlan: Option<u16>,
    decided: Stage,
    events: &[StageEvent],
) -> Vec<Step> {
    let mut steps = Vec::new();
    let fixed = |stage: Stage, target: &str, verdict: Option<&'static str>, note: String| Step {
        stage: stage.as_str(),
        target: target.to_owned(),
        acl: None,
        rule: None,
        verdict,
        note,
    };
    // Rescue.
    if decided == Stage::Rescue {
        let d = policy.evaluate(key, ctx);
        let id = policy.rule_name(&d).to_owned();
        let at = match d.rule {
            RuleRef::Rescue(i) => loaded.ruleset.rescue.get(i as usize).map(|r| r.span),
            _ => None,
        };
        let mut s = fixed(
            Stage::Rescue,
            "",
            Some("permit"),
            format!(
                "matches rescue rule {id}{}",
                at.map_or(String::new(), |s| format!(
                    " at {}:{}:{}",
                    loaded.file, s.line, s.col
                ))
            ),
        );
        s.rule = Some(id);
        steps.push(s);
        return steps;
    }
    steps.push(fixed(
        Stage::Rescue,
        "",
        None,
        format!("no rescue rule matched (of {})", policy.rescue_count()),
    ));
    if decided == Stage::Malformed {
        steps.push(fixed(
            Stage::Malformed,
            "",
            Some(policy.evaluate(key, ctx).verdict.as_str()),
            format!("parse status {:?}: defaults.malformed applies", key.status),
        ));
        return steps;
    }
    if decided == Stage::VlanFilter {
        steps.push(fixed(
            Stage::VlanFilter,
            &format!("VLAN {}", key.outer_vlan & 0x0fff),
            Some("deny"),
            "the port does not carry this VLAN (not its access VLAN nor in its trunk list)".into(),
        ));
        return steps;
    }
    if decided == Stage::Context {
        steps.push(fixed(
            Stage::Context,
            "",
            Some("deny"),
            "unknown port or interface".into(),
        ));
        return steps;
    }
    let port_name = policy
        .port_info(ctx.port)
        .map_or(String::new(), |p| p.name.clone());
    let iface = |i| policy.interface_info(i).map_or(String::new(), |x| x.name.clone());
    let egress_vlan = ctx
        .route
        .and_then(|r| policy.interface_info(r.to))
        .and_then(|i| i.vlan);
    // (stage, what it is bound to, whether the stage applies to this packet)
    let mut plan: Vec<(Stage, String, bool)> = vec![
        (Stage::PortAcl, format!("port {port_name}"), true),
        (
            Stage::VlanAclIn,
            vlan.map_or("no VLAN".into(), |v| format!("VLAN {v}")),
            vlan.is_some(),
        ),
    ];
    if let Some(r) = ctx.route {
        plan.push((
            Stage::RoutedAclIn,
            format!("interface {} in", iface(r.from)),
            key.is_ip(),
        ));
        plan.push((
            Stage::RoutedAclOut,
            format!("interface {} out", iface(r.to)),
            key.is_ip(),
        ));
        plan.push((
            Stage::VlanAclOut,
            egress_vlan.map_or(format!("{} (routed port)", iface(r.to)), |v| format!("VLAN {v}")),
            egress_vlan.is_some(),
        ));
    }
    let mut ended = false;
    for (stage, target, applies) in plan {
        if ended {
            steps.push(fixed(stage, &target, None, "not reached".into()));
            continue;
        }
        if let Some(e) = events.iter().find(|e| e.stage == stage) {
            let acl = policy.acl_name(Some(e.acl)).unwrap_or("").to_owned();
            let rule = policy.rule_label(Some(e.acl), e.rule).to_owned();
            let note = match e.rule {
                RuleRef::Rule(i) => {
                    let span = loaded
                        .ruleset
                        .acls
                        .get(e.acl as usize)
                        .and_then(|a| a.rules.get(i as usize))
                        .map(|r| r.span);
                    let n = i + 1;
                    let index = if rule == format!("#{n}") {
                        String::new()
                    } else {
                        format!("(#{n}) ")
                    };
                    let sets: String = policy
                        .set_reasons(Some(e.acl), e.rule, key)
                        .iter()
                        .map(|s| format!("; {s}"))
                        .collect();
                    format!(
                        "{index}{}{sets}",
                        span.map_or(String::new(), |s| format!(
                            "at {}:{}:{}",
                            loaded.file, s.line, s.col
                        ))
                    )
                }
                _ => "(no rule matched: the ACL's default)".into(),
            };
            ended = e.verdict == palisade_engine::policy::Verdict::Deny;
            steps.push(Step {
                stage: stage.as_str(),
                target,
                acl: Some(acl),
                rule: Some(rule),
                verdict: Some(e.verdict.as_str()),
                note,
            });
        } else {
            let why = if applies {
                "no ACL bound: passes"
            } else if matches!(stage, Stage::RoutedAclIn | Stage::RoutedAclOut) {
                "does not apply (Routed ACLs are for IP)"
            } else {
                "does not apply"
            };
            steps.push(fixed(stage, &target, None, why.into()));
        }
    }
    steps
}
