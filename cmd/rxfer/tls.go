package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/rxfer/rxfer/internal/pki"
	"github.com/rxfer/rxfer/service"
)

// clientTLSFlags are a client command's TLS flags (--tls-ca, --tls-cert,
// --tls-key), defaulting to $RXFER_TLS_CA, $RXFER_TLS_CERT, $RXFER_TLS_KEY.
type clientTLSFlags struct {
	ca, cert, key *string
}

func addClientTLSFlags(fs *flag.FlagSet) clientTLSFlags {
	return clientTLSFlags{
		ca:   fs.String("tls-ca", os.Getenv("RXFER_TLS_CA"), "CA certificate(s) that sign the nodes' certificates: speak TLS 1.3 and verify each node (default: $RXFER_TLS_CA)"),
		cert: fs.String("tls-cert", os.Getenv("RXFER_TLS_CERT"), "client certificate to present (default: $RXFER_TLS_CERT)"),
		key:  fs.String("tls-key", os.Getenv("RXFER_TLS_KEY"), "key of --tls-cert (default: $RXFER_TLS_KEY)"),
	}
}

// client loads the TLS client, or returns nil when no CA is set (plaintext).
func (f clientTLSFlags) client() (*pki.Client, error) {
	if (*f.cert == "") != (*f.key == "") {
		return nil, usagef("--tls-cert and --tls-key (or RXFER_TLS_CERT and RXFER_TLS_KEY) go together")
	}
	if *f.ca == "" {
		if *f.cert != "" {
			return nil, usagef("--tls-cert needs --tls-ca (or RXFER_TLS_CA) to verify the nodes with")
		}
		return nil, nil
	}
	return loadTLSClient(*f.ca, *f.cert, *f.key)
}

func loadTLSClient(caFile, certFile, keyFile string) (*pki.Client, error) {
	ca, err := pki.LoadCAPool(caFile)
	if err != nil {
		return nil, err
	}
	var kp *pki.KeyPair
	if certFile != "" {
		if kp, err = pki.LoadKeyPair(certFile, keyFile); err != nil {
			return nil, err
		}
	}
	return pki.NewClient(ca, kp), nil
}

// credentials are what a client command connects to nodes with.
func (f clientTLSFlags) credentials(tokenFile string) (service.Credentials, error) {
	token, err := readToken(tokenFile)
	if err != nil {
		return service.Credentials{}, err
	}
	c, err := f.client()
	return service.Credentials{Token: token, TLS: c}, err
}

// serveTLSFlags are serve's TLS and authorization flags.
type serveTLSFlags struct {
	cert, key, clientCA, peerCA, authz *string
}

func addServeTLSFlags(fs *flag.FlagSet) serveTLSFlags {
	return serveTLSFlags{
		cert:     fs.String("tls-cert", "", "this node's certificate: serve TLS 1.3 with it, and present it when calling peers (re-read when the file changes)"),
		key:      fs.String("tls-key", "", "key of --tls-cert"),
		clientCA: fs.String("tls-client-ca", "", "CA certificate(s) of clients and peers: every caller must present a certificate it signs"),
		peerCA:   fs.String("tls-peer-ca", "", "CA certificate(s) that verify the nodes this node calls (default: --tls-client-ca)"),
		authz:    fs.String("authz", "", "TOML policy of which certificate identities may read, write, manage regions and call the Peer service (default: nodes everything, clients all but Peer)"),
	}
}

// serveTLS is what serve's TLS flags amount to.
type serveTLS struct {
	cert     *pki.KeyPair
	server   *tls.Config
	clientCA *pki.CAPool
	peers    *pki.Client
	policy   *service.Policy
}

// load checks and loads the flags; nodeID is --node-id ("" if not given)
// and becomes the certificate's node ID when empty. A certificate that is
// not a node's, or names another node, is a usage error (exit status 2).
func (f serveTLSFlags) load(nodeID *string, log *slog.Logger) (*serveTLS, error) {
	if (*f.cert == "") != (*f.key == "") {
		return nil, usagef("--tls-cert and --tls-key go together")
	}
	if *f.cert == "" {
		if *f.clientCA != "" || *f.peerCA != "" || *f.authz != "" {
			return nil, usagef("--tls-client-ca, --tls-peer-ca and --authz need --tls-cert and --tls-key")
		}
		return nil, nil
	}
	if *f.authz != "" && *f.clientCA == "" {
		return nil, usagef("--authz judges certificate identities: it needs --tls-client-ca")
	}
	kp, err := pki.LoadKeyPair(*f.cert, *f.key)
	if err != nil {
		return nil, err
	}
	_, id := kp.Current()
	switch {
	case id.Kind != pki.KindNode:
		return nil, usagef("--tls-cert %s names %s: a node serves with a node certificate (rxfer certs init --nodes)", *f.cert, id)
	case *nodeID == "":
		*nodeID = id.Name
	case *nodeID != id.Name:
		return nil, usagef("--node-id %s disagrees with --tls-cert %s, which names %s: use --node-id %s or that node's certificate", *nodeID, *f.cert, id, id.Name)
	}
	kp.Check = func(got pki.Identity) error {
		if got != id {
			return fmt.Errorf("the new certificate names %s, not this node (%s): keeping the old one", got, id)
		}
		return nil
	}
	kp.OnReload = func(now pki.Identity, leaf *x509.Certificate, err error) {
		if err != nil {
			log.Warn("TLS certificate not reloaded", "err", err)
			return
		}
		log.Info("TLS certificate reloaded", "identity", now.URI(), "serial", fmt.Sprintf("%x", leaf.SerialNumber), "expires", leaf.NotAfter)
	}
	t := &serveTLS{cert: kp, server: pki.ServerConfig(kp, *f.clientCA != "")}
	if *f.clientCA != "" {
		if t.clientCA, err = pki.LoadCAPool(*f.clientCA); err != nil {
			return nil, err
		}
	}
	if peerCA := cmpStr(*f.peerCA, *f.clientCA); peerCA != "" {
		ca, err := pki.LoadCAPool(peerCA)
		if err != nil {
			return nil, err
		}
		t.peers = pki.NewClient(ca, kp)
	}
	if *f.authz != "" {
		if t.policy, err = service.LoadPolicy(*f.authz); err != nil {
			return nil, usageError{err.Error()}
		}
	}
	return t, nil
}

func cmpStr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// options fills the service options of a TLS-serving node.
func (t *serveTLS) options(o *service.Options) {
	if t == nil {
		return
	}
	o.TLS, o.ClientCA, o.PeerTLS, o.Policy = t.server, t.clientCA, t.peers, t.policy
}

// pullTLS makes a pulling CLI's one-copy destination speak TLS when the CLI
// does: it serves a fresh self-signed certificate, whose SHA-256 (returned)
// the source node is told over the authenticated Copy call and pins, so
// the one-time token and the data-channel keys travel inside TLS; the
// source node must present a certificate the CLI's CA signs.
func pullTLS(o cpOptions, opts *service.Options) (pin []byte, err error) {
	if o.tls == nil {
		return nil, nil
	}
	cert, err := pki.Ephemeral()
	if err != nil {
		return nil, err
	}
	opts.TLS = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
	opts.ClientCA = o.tls.CA
	return pki.Fingerprint(cert.Leaf), nil
}

// tlsStatus describes the certificate a node answered with, or "" in plaintext.
func tlsStatus(ai credentials.AuthInfo) string {
	info, ok := ai.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return ""
	}
	leaf := info.State.PeerCertificates[0]
	who := leaf.Subject.String()
	if id, err := pki.FromCertificate(leaf); err == nil {
		who = id.String()
	}
	return fmt.Sprintf("tls: %s, %s, certificate serial %x, valid until %s", tls.VersionName(info.State.Version), who,
		leaf.SerialNumber, leaf.NotAfter.UTC().Format(time.RFC3339))
}
