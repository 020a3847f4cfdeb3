//! HTTPS on the web intake: with `web.tls_cert`/`web.tls_key` the listener speaks only TLS, a
//! real client (Python's urllib, trusting the generated certificate) loads the form with its
//! security headers and HSTS and posts a request that gets its ticket; plain HTTP gets no answer.

mod support;

use std::io::{Read, Write};

use support::Barrage;

fn start() -> (tempfile::TempDir, Barrage) {
    let dir = tempfile::tempdir().unwrap();
    support::certs::self_signed(dir.path());
    let config = format!(
        "[web]\ntls_cert = \"{0}/cert.pem\"\ntls_key = \"{0}/key.pem\"\n",
        dir.path().display()
    );
    let path = dir.path().join("barrage.toml");
    std::fs::write(&path, config).unwrap();
    let barrage = Barrage::start(
        &dir.path().join("data"),
        &["--config", path.to_str().unwrap()],
    );
    (dir, barrage)
}

/// Loads the form over HTTPS, prints its security headers, posts it back with its token and
/// prints the answer.
const CLIENT: &str = r#"
import json, re, ssl, sys, urllib.parse, urllib.request
base, cafile = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)
with urllib.request.urlopen(base + "/", context=ctx, timeout=30) as page:
    for name in ["Strict-Transport-Security", "Content-Security-Policy",
                 "X-Content-Type-Options", "X-Frame-Options"]:
        print(name + ": " + str(page.headers.get(name)))
    html = page.read().decode()
token = re.search(r'name="form_token" value="([^"]+)"', html).group(1)
body = urllib.parse.urlencode({"form_token": token, "domain": "https-form.fr",
    "holder": "Jeanne Durand", "contact": "", "email": "jeanne@example.net"}).encode()
request = urllib.request.Request(base + "/requests", data=body, method="POST")
with urllib.request.urlopen(request, context=ctx, timeout=30) as answer:
    print("status: " + str(answer.status))
    print("answer: " + answer.read().decode())
"#;

#[tokio::test]
async fn a_real_client_submits_the_form_over_https_with_hsts_and_security_headers() {
    let (dir, barrage) = start();
    let web = barrage.web.expect("the web intake listens");
    let output = support::output_tied({
        let mut command = std::process::Command::new("python3");
        command.args(["-c", CLIENT, &format!("https://127.0.0.1:{}", web.port())]);
        command.arg(dir.path().join("cert.pem"));
        command
    });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "python failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("Strict-Transport-Security: max-age=31536000\n"),
        "{stdout}"
    );
    assert!(stdout.contains("frame-ancestors 'none'"), "{stdout}");
    assert!(stdout.contains("form-action 'self'"), "{stdout}");
    assert!(stdout.contains("default-src 'none'"), "{stdout}");
    assert!(
        stdout.contains("X-Content-Type-Options: nosniff\n"),
        "{stdout}"
    );
    assert!(stdout.contains("X-Frame-Options: DENY\n"), "{stdout}");
    assert!(stdout.contains("status: 202\n"), "{stdout}");
    let answer = stdout.split("answer: ").nth(1).unwrap();
    let answer: serde_json::Value = serde_json::from_str(answer.trim()).unwrap();
    assert_eq!(answer["ticket"], 1, "{answer}");
    let requests = barrage.all_requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["domain"], "https-form.fr");
}

#[test]
fn plain_http_on_the_https_listener_gets_no_http_answer() {
    let (_dir, barrage) = start();
    let web = barrage.web.expect("the web intake listens");
    let mut stream = std::net::TcpStream::connect(web).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "a plain-text request was answered in plain text: {}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn plain_http_answers_carry_the_security_headers_but_no_hsts() {
    let dir = tempfile::tempdir().unwrap();
    let barrage = Barrage::start(&dir.path().join("data"), &[]);
    let web = barrage.web.expect("the web intake listens");
    let page = reqwest::get(format!("http://{web}/")).await.unwrap();
    let headers = page.headers();
    assert!(headers.get("strict-transport-security").is_none());
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
}
