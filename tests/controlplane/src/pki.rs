//! The keys and certificates a control plane needs, made fresh for each
//! start: a CA, the API server's serving certificate (for 127.0.0.1 and
//! localhost, so rustls and kubectl verify it as they would a real
//! cluster's), and the key service-account tokens are signed with.

use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

pub struct Pki {
    pub ca_pem: String,
    pub ca_der: Vec<u8>,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    /// ECDSA P-256, PKCS#8: the API server signs tokens with it (ES256),
    /// the controller manager signs the tokens it mints for controllers.
    pub service_account_key_pem: String,
    /// Its public half, which the API server verifies tokens with.
    pub service_account_public_pem: String,
}

pub fn generate() -> Result<Pki> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "maily-test-kubernetes-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::CrlSign,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let mut serving = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default.svc".to_string(),
    ])?;
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let serving_key = KeyPair::generate()?;
    let serving_cert = serving.signed_by(&serving_key, &ca)?;
    let sa_key = KeyPair::generate()?;
    Ok(Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().to_vec(),
        serving_cert_pem: serving_cert.pem(),
        serving_key_pem: serving_key.serialize_pem(),
        service_account_key_pem: sa_key.serialize_pem(),
        service_account_public_pem: sa_key.public_key_pem(),
    })
}
