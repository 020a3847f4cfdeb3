//! `barrage ack preview --config FILE` shows the ack of a sample request, and refuses a broken
//! template or a config without `[ack]` with a clear message.

use std::process::Command;

fn preview(config: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_barrage"))
        .args(["ack", "preview", "--config"])
        .arg(config)
        .output()
        .expect("barrage runs")
}

#[test]
fn preview_renders_the_example_config() {
    let example =
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/barrage.example.toml"));
    let out = preview(example);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "To: jeanne@exemple.org\n",
        "In-Reply-To: <request-1@client.exemple.org>\n",
        "X-Barrage-Ticket: 42\n",
        "X-Barrage-Accepted-At: 2026-05-11T09:00:00.123456Z\n",
        "Message-ID: <ack.42.",
        "Domaine demandé   : exemple.fr\n",
        "Requested domain  : exemple.fr\n",
    ] {
        assert!(text.contains(needle), "preview lacks {needle:?}:\n{text}");
    }
}

#[test]
fn preview_refuses_a_broken_template_and_a_config_without_acks() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("ack.txt.j2");
    std::fs::write(&template, "Ticket {{ ticket \n").unwrap();
    let config = dir.path().join("barrage.toml");
    std::fs::write(
        &config,
        format!(
            "[ack]\nrelay = \"127.0.0.1:25\"\nfrom = \"registry@example.fr\"\ntemplate = {:?}\n",
            template.to_str().unwrap()
        ),
    )
    .unwrap();
    let out = preview(&config);
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("ack.template is not a valid template"),
        "{error}"
    );

    std::fs::write(&config, "hostname = \"x.test\"\n").unwrap();
    let out = preview(&config);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no [ack] section"));
}
