//! The disk guard, per backend: with the image filesystem fuller than
//! KIP_MAX_DISK_USAGE_PERCENT, nothing is pulled and each image is reported as skipped, naming
//! the variable; with room, the same list pulls. (The containerd backend's room check before a
//! download has a test binary of its own, `kip_disk_room`.)

use e2e::Backend;

fn disk_pressure_skips_pulls(backend: Backend) {
    let Some((_, images)) = backend.push("disk", 1, None) else {
        return;
    };
    let ns = backend.namespace("kipdisk");
    // The test filesystem is more than 0.001 % used, so this limit is always reached.
    let text = backend
        .kip(&ns, &images)
        .env("KIP_MAX_DISK_USAGE_PERCENT", "0.001")
        .expect(1);
    assert!(
        text.contains(&format!("{}: skipped: image filesystem", images[0])),
        "{text}"
    );
    assert!(text.contains("KIP_MAX_DISK_USAGE_PERCENT=0.001"), "{text}");
    assert!(
        !backend.has_image(&ns, &images[0]),
        "pulled despite the limit"
    );

    backend
        .kip(&ns, &images)
        .env("KIP_MAX_DISK_USAGE_PERCENT", "100")
        .expect(0);
    backend.assert_complete(&ns, &images[0]);
}

#[test]
fn disk_pressure_skips_pulls_on_every_backend() {
    Backend::ONE_OF_EACH
        .into_iter()
        .for_each(disk_pressure_skips_pulls);
}
