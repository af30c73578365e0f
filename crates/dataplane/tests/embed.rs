//! Runs `examples/embed.rs`, the minimal embedding, and checks what its packet loop saw.

#[path = "../examples/embed.rs"]
mod embed;

#[test]
fn the_embedding_example_filters_tags_and_reloads() {
    let dir = std::env::temp_dir().join(format!("palisade-embed-test-{}", std::process::id()));
    let s = embed::run(&dir).expect("the example runs");
    let _ = std::fs::remove_dir_all(&dir);
    // 10 batches of 64 frames before and after the reload, DNS, HTTPS, SSH and SMTP in turn.
    assert_eq!(s.before, (480, 160), "dns, https and ssh permitted; smtp denied");
    assert_eq!(s.after, (320, 320), "ssh denied once the reload is active");
    assert_eq!(s.generations, (1, 2));
    assert_eq!(s.ssh_hits_before, 160);
    assert_eq!(s.engine_frames, 1280, "the engine counted every frame");
    assert_eq!(
        s.tagged_out, 800,
        "every permitted frame left the trunk tagged with VLAN 10"
    );
}
