//! Setup errors: each names what was wrong, and none installs or starts anything.

use std::net::SocketAddr;

use autorefresh_prometheus::{set_buckets, Error, Exporter, PrometheusBuilder, PrometheusMetrics};

#[test]
fn install_outside_a_runtime_is_an_error_naming_the_address() {
    let addr: SocketAddr = "127.0.0.1:9898".parse().unwrap();
    let err = PrometheusMetrics::install("jobs", addr).unwrap_err();
    assert!(matches!(err, Error::NoRuntime { addr: a } if a == addr), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1:9898"), "{err}");
    assert!(err.to_string().contains("Tokio runtime"), "{err}");
    // Nothing was installed: a recorder can still be set.
    let recorder = PrometheusBuilder::new().build_recorder();
    assert!(metrics::set_global_recorder(recorder).is_ok());
}

#[test]
fn serve_outside_a_runtime_is_an_error() {
    let handle = PrometheusBuilder::new().build_recorder().handle();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let err = Exporter::serve(handle, addr).unwrap_err();
    assert!(matches!(err, Error::NoRuntime { .. }), "{err:?}");
}

#[test]
fn bind_errors_name_the_address_and_keep_the_source() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _entered = rt.enter();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let handle = set_buckets(PrometheusBuilder::new()).unwrap().build_recorder().handle();
    let err = Exporter::serve(handle, addr).unwrap_err();
    assert_eq!(err.to_string(), format!("cannot listen for /metrics on {addr}"));
    let source = std::error::Error::source(&err).expect("the io error");
    let io = source.downcast_ref::<std::io::Error>().expect("an io::Error");
    assert_eq!(io.kind(), std::io::ErrorKind::AddrInUse);
}

#[test]
fn exporter_debug_shows_its_address() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _entered = rt.enter();
    let handle = PrometheusBuilder::new().build_recorder().handle();
    let exporter = Exporter::serve(handle, "127.0.0.1:0".parse().unwrap()).unwrap();
    let debug = format!("{exporter:?}");
    assert!(
        debug.starts_with(&format!(
            "Exporter {{ local_addr: {}, running: true",
            exporter.local_addr()
        )),
        "{debug}"
    );
    rt.block_on(exporter.shutdown());
}
