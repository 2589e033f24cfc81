//! A kernel's socket as the bridge holds it: a [`ZmtpSocket`] counted in
//! `gateway_kernel_sockets` while it is open.

use std::ops::Deref;

use crate::{
    metrics::{GaugeGuard, Metrics},
    zmtp::ZmtpSocket,
};

pub(super) struct ZSocket {
    socket: ZmtpSocket,
    _open: GaugeGuard,
}

impl ZSocket {
    pub(super) fn new(socket: ZmtpSocket, metrics: &Metrics) -> Self {
        Self {
            socket,
            _open: metrics.kernel_socket(),
        }
    }
}

impl Deref for ZSocket {
    type Target = ZmtpSocket;

    fn deref(&self) -> &ZmtpSocket {
        &self.socket
    }
}
