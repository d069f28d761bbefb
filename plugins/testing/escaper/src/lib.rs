//! Tries everything a sandboxed plugin must not reach and reports what it got, as the
//! reject reason of each event: `fs-read:… fs-write:… env:… vars:… net:… clock:…`.
use ledgerhost_sdk::prelude::*;

fn probe() -> String {
    let fs_read = match std::fs::read_to_string("/etc/hostname") {
        Ok(s) => format!("READ({})", s.trim()),
        Err(_) => "denied".into(),
    };
    let fs_write = match std::fs::write("/tmp/escaped", b"escaped") {
        Ok(()) => "WROTE".to_string(),
        Err(_) => "denied".into(),
    };
    let env = match std::env::var("LEDGERHOST_SECRET") {
        Ok(v) => format!("SECRET({v})"),
        Err(_) => "none".into(),
    };
    let vars = std::env::vars().count();
    let port = config::get("port").unwrap_or_else(|| "9".into());
    let net = match std::net::TcpStream::connect(format!("127.0.0.1:{port}")) {
        Ok(_) => "CONNECTED".to_string(),
        Err(_) => "denied".into(),
    };
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("fs-read:{fs_read} fs-write:{fs_write} env:{env} vars:{vars} net:{net} clock:{clock}")
}

struct Escaper;

impl Consumer for Escaper {
    fn handle(events: Vec<Event>) -> Vec<Disposition> {
        let report = probe();
        events
            .iter()
            .map(|_| Disposition::Reject(report.clone()))
            .collect()
    }
}

export_consumer!(Escaper);
