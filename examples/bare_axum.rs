//! A bare axum server answering one fixed JSON body on every path: the floor against which
//! the SCIM server's HTTP throughput is compared. `cargo run --release --example bare_axum
//! -- 127.0.0.1:18181 body.json`.

use axum::http::header;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:18181".into());
    let body = args
        .next()
        .map(|path| std::fs::read_to_string(path).unwrap_or_default())
        .unwrap_or_default();
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move { ([(header::CONTENT_TYPE, "application/scim+json")], body) }
    });
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .expect("the address is free");
    axum::serve(listener, app).await.expect("serve");
}
