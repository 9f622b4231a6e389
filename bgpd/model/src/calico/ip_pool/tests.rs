//! Every IPPool rule: what it accepts and each refusal, with its field and reason.

use super::*;

/// The spec as ipam reads it: serde from YAML.
fn spec(yaml: &str) -> IpPoolSpec {
    serde_yaml::from_str(yaml).unwrap()
}

fn refusals(yaml: &str) -> Vec<(String, String)> {
    let found = IpPool::validate("p", &spec(yaml)).expect_err(yaml);
    assert!(found.iter().all(|e| e.kind == "IPPool" && e.name == "p"), "{found:?}");
    found.into_iter().map(|e| (e.field, e.reason)).collect()
}

fn one_refusal(yaml: &str) -> (String, String) {
    let mut found = refusals(yaml);
    assert_eq!(found.len(), 1, "{yaml}: {found:?}");
    found.remove(0)
}

#[test]
fn defaults_are_calicos() {
    let p = IpPool::validate("default-ipv4-ippool", &spec("{cidr: 192.168.0.0/16}")).unwrap();
    assert_eq!(p.name, "default-ipv4-ippool");
    assert_eq!((p.block_size, p.block_count(), p.block_len()), (26, 1024, 64));
    assert_eq!((&p.node_selector, &p.namespace_selector), (&Selector::All, &Selector::All));
    assert_eq!(p.allowed_uses, [AllowedUse::Workload, AllowedUse::Tunnel]);
    assert_eq!((p.ipip_mode, p.vxlan_mode), (EncapMode::Never, EncapMode::Never));
    assert_eq!(p.assignment_mode, AssignmentMode::Automatic);
    assert!(!p.disabled && !p.disable_bgp_export && !p.nat_outgoing);
    assert!(p.usable_for_workloads());
    let v6 = IpPool::validate("v6", &spec("{cidr: 'fd00::/64'}")).unwrap();
    assert_eq!((v6.family(), v6.block_size), (IpFamily::V6, 122));
}

#[test]
fn every_field_is_read() {
    let p = IpPool::validate(
        "v6",
        &spec(
            "{cidr: 'fd00::/64', blockSize: 120, nodeSelector: 'rack == \"r1\" && !has(edge)', \
             namespaceSelector: 'team == \"b\"', disabled: true, allowedUses: [LoadBalancer], \
             disableBGPExport: true, assignmentMode: Manual, vxlanMode: CrossSubnet, natOutgoing: true}",
        ),
    )
    .unwrap();
    assert_eq!(p.block_size, 120);
    assert_eq!(p.node_selector.to_string(), Selector::parse("rack == \"r1\" && !has(edge)").unwrap().to_string());
    assert_ne!(p.namespace_selector, Selector::All);
    assert_eq!(p.allowed_uses, [AllowedUse::LoadBalancer]);
    assert_eq!((p.assignment_mode, p.vxlan_mode), (AssignmentMode::Manual, EncapMode::CrossSubnet));
    assert!(p.disabled && p.disable_bgp_export && p.nat_outgoing && !p.usable_for_workloads());
    let empty = IpPool::validate("p", &spec("{cidr: 10.0.0.0/16, nodeSelector: '', namespaceSelector: ''}")).unwrap();
    assert_eq!(empty.node_selector, Selector::All, "the empty selector is all()");
}

#[test]
fn cidr_is_required_and_a_network() {
    assert_eq!(one_refusal("{}"), ("cidr".into(), "missing".into()));
    assert_eq!(one_refusal("{cidr: ''}"), ("cidr".into(), "missing".into()), "Go's zero value is absent");
    assert_eq!(
        one_refusal("{cidr: 10.0.0.1/24}"),
        ("cidr".into(), "\"10.0.0.1/24\" has host bits set (the network is 10.0.0.0/24)".into())
    );
    for bad in ["10.0.0.0/33", "nonsense", "10.0.0.0"] {
        let (field, reason) = one_refusal(&format!("{{cidr: '{bad}'}}"));
        assert_eq!((field.as_str(), reason), ("cidr", format!("\"{bad}\" is not a CIDR (expected e.g. 10.96.0.0/12)")));
    }
}

#[test]
fn block_size_is_in_the_familys_range_and_fits_the_pool() {
    let outside = |yaml, want: &str| assert_eq!(one_refusal(yaml), ("blockSize".into(), want.into()), "{yaml}");
    outside("{cidr: 10.0.0.0/16, blockSize: 19}", "19 is outside 20..=32 for an IPv4 pool");
    outside("{cidr: 10.0.0.0/24, blockSize: 33}", "33 is outside 20..=32 for an IPv4 pool");
    outside("{cidr: 'fd00::/64', blockSize: 100}", "100 is outside 116..=128 for an IPv6 pool");
    outside(
        "{cidr: 10.0.0.0/24, blockSize: 23}",
        "23 is shorter than the pool's prefix /24: a block must fit in the pool",
    );
    let p = IpPool::validate("p", &spec("{cidr: 10.0.0.0/24, blockSize: 24}")).unwrap();
    assert_eq!(p.block_count(), 1, "a pool of one block");
    let p = IpPool::validate("p", &spec("{cidr: 10.0.0.0/16, blockSize: 32}")).unwrap();
    assert_eq!(p.block_len(), 1);
}

#[test]
fn selectors_must_parse() {
    let (field, reason) = one_refusal("{cidr: 10.0.0.0/16, nodeSelector: 'rack =='}");
    assert_eq!(field, "nodeSelector");
    assert_eq!(reason, Selector::parse("rack ==").unwrap_err().to_string());
    assert_eq!(one_refusal("{cidr: 10.0.0.0/16, namespaceSelector: '!'}").0, "namespaceSelector");
}

#[test]
fn ipip_is_ipv4_only_and_not_with_vxlan() {
    assert_eq!(
        one_refusal("{cidr: 10.0.0.0/16, ipipMode: Always, vxlanMode: CrossSubnet}"),
        ("vxlanMode".into(), "cannot be enabled together with ipipMode".into())
    );
    assert_eq!(
        one_refusal("{cidr: 'fd00::/64', ipipMode: CrossSubnet}"),
        ("ipipMode".into(), "IPIP is not supported for an IPv6 pool".into())
    );
    for ok in ["{cidr: 10.0.0.0/16, ipipMode: CrossSubnet}", "{cidr: 'fd00::/64', vxlanMode: Always, ipipMode: Never}"]
    {
        assert!(IpPool::validate("p", &spec(ok)).is_ok(), "{ok}");
    }
}

#[test]
fn words_outside_calicos_are_refused_by_serde_and_by_from_str_alike() {
    let want = "\"Sometimes\" is not one of Never, Always, CrossSubnet";
    assert_eq!("Sometimes".parse::<EncapMode>().unwrap_err(), want);
    let err = serde_yaml::from_str::<IpPoolSpec>("{cidr: 10.0.0.0/16, ipipMode: Sometimes}").unwrap_err();
    assert!(err.to_string().contains(want), "{err}");
    let err = serde_yaml::from_str::<IpPoolSpec>("{cidr: 10.0.0.0/16, allowedUses: [Workload, Pods]}").unwrap_err();
    assert!(err.to_string().contains("\"Pods\" is not one of Workload, Tunnel, LoadBalancer"), "{err}");
    assert_eq!("Auto".parse::<AssignmentMode>().unwrap_err(), "\"Auto\" is not one of Automatic, Manual");
    assert_eq!("Tunnel".parse::<AllowedUse>(), Ok(AllowedUse::Tunnel));
}

#[test]
fn every_fault_is_reported_and_from_spec_gives_the_first() {
    let yaml = "{cidr: 'fd00::/64', blockSize: 100, nodeSelector: 'a ==', ipipMode: Always}";
    let fields: Vec<String> = refusals(yaml).into_iter().map(|(field, _)| field).collect();
    assert_eq!(fields, ["blockSize", "nodeSelector", "ipipMode"]);
    let first = IpPool::from_spec("p", &spec(yaml)).unwrap_err();
    assert_eq!(first.to_string(), "IPPool \"p\": field blockSize: 100 is outside 116..=128 for an IPv6 pool");
}

#[test]
fn blocks_of_a_pool() {
    let p = IpPool::validate("p", &spec("{cidr: 10.0.0.0/24, blockSize: 26}")).unwrap();
    assert_eq!(p.block_at(0), Some("10.0.0.0/26".parse().unwrap()));
    assert_eq!(p.block_at(3), Some("10.0.0.192/26".parse().unwrap()));
    assert_eq!(p.block_at(4), None);
    assert_eq!(p.block_of("10.0.0.130".parse().unwrap()), Some("10.0.0.128/26".parse().unwrap()));
    assert_eq!(p.block_of("10.0.1.1".parse().unwrap()), None);
    let v6 = IpPool::validate("v6", &spec("{cidr: 'fd00::/120'}")).unwrap();
    assert_eq!(v6.block_at(1), Some("fd00::40/122".parse().unwrap()));
}
