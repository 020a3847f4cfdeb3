//! Rebuilds report.json / report.md / report.html / latency.hlog of a run folder from its records,
//! keeping the checks of an existing report.json: `cargo run -p reports --example regenerate DIR`.
//! (`landrush report DIR` does the same; this needs no buffer or driver to be built.)

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: regenerate RUN_DIR"))?;
    let report = reports::regenerate(std::path::Path::new(&dir))?;
    print!("{}", reports::markdown::render(&report));
    Ok(())
}
