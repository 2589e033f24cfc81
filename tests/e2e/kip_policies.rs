//! Pull policies on the node, per backend: IfNotPresent asks the registry nothing about a
//! present image; Always sends one manifest HEAD for an unchanged tag and pulls a tag that moved.

use e2e::{Backend, push_images, registry_requests, repo_of};

fn policies(backend: Backend) {
    let Some((registry, images)) = backend.push("policy", 1, None) else {
        return;
    };
    let repo = repo_of(&images[0]).to_owned();
    let blob_gets = || registry_requests(&format!("GET /v2/{repo}/blobs/"));
    let manifest_requests = || registry_requests(&format!("/v2/{repo}/manifests/"));
    let ns = backend.namespace("kippolicy");
    let kip = backend.kip(&ns, &images);

    kip.expect(0);
    assert!(backend.has_image(&ns, &images[0]));
    let (blobs, manifests) = (blob_gets(), manifest_requests());
    // Config and the random-data layer are unique to this image; the base and id layers may
    // already be on the node from other tests' images.
    assert!(blobs >= 2, "first pull fetched {blobs} blobs of {repo}");

    // IfNotPresent: the image is on the node, so the registry hears nothing about it.
    kip.expect(0);
    assert_eq!(
        blob_gets(),
        blobs,
        "IfNotPresent fetched blobs of a present image"
    );
    assert_eq!(
        manifest_requests(),
        manifests,
        "IfNotPresent asked the registry about a present image"
    );

    // Always on an unchanged tag: one manifest HEAD, no manifest GET, no blob GET, no pull.
    let heads = || registry_requests(&format!("\"HEAD /v2/{repo}/manifests/"));
    let manifest_gets = || registry_requests(&format!("\"GET /v2/{repo}/manifests/"));
    let (heads_before, gets_before) = (heads(), manifest_gets());
    let always = kip.env("KIP_PULL_POLICY", "Always");
    let text = always.expect(0);
    assert_eq!(heads(), heads_before + 1, "no manifest HEAD:\n{text}");
    assert_eq!(
        manifest_gets(),
        gets_before,
        "manifest GET for an unchanged tag:\n{text}"
    );
    assert_eq!(blob_gets(), blobs, "blob GET for an unchanged tag:\n{text}");
    assert!(
        !text.contains("pull finished"),
        "pulled an unchanged tag:\n{text}"
    );

    // The tag moves to another image: Always pulls it, and the node's tag follows.
    let digest_before = backend.node_digest(&ns, &images[0]);
    assert!(digest_before.contains("sha256:"), "{digest_before}");
    let other = push_images(&registry, &format!("test/{}-policy-next", backend.tag()), 1);
    let tag_of = |r: &str| r.split_once('/').unwrap().1.to_owned();
    e2e::retag(&registry, &tag_of(&other[0]), &tag_of(&images[0]));
    let text = always.expect(0);
    assert!(text.contains("tag moved; pulling"), "{text}");
    assert!(
        text.contains("outcome=\"pulled\"") || text.contains("outcome=pulled"),
        "{text}"
    );
    assert!(
        manifest_gets() > gets_before,
        "the moved tag was not fetched:\n{text}"
    );
    let digest_after = backend.node_digest(&ns, &images[0]);
    assert_ne!(
        digest_after, digest_before,
        "the node's tag did not follow the move"
    );
}

#[test]
fn if_not_present_and_always() {
    Backend::ONE_OF_EACH.into_iter().for_each(policies);
}
