//! The gateway binary. Serving kernelspecs is not implemented yet; it exits with an error so that
//! nothing mistakes it for a working service.

fn main() {
    eprintln!("gateway: not implemented yet");
    std::process::exit(1);
}
