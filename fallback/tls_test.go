package fallback

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/rxfer/rxfer/internal/crc32c"
)

// An encrypted transfer lands intact; an observer of the wire sees neither
// the payload nor the token's id, and the sender learns which kind of TLS
// carried it (kTLS where the kernel offers it, else crypto/tls).
func TestEncryptedRoundTrip(t *testing.T) {
	l := newListener(t, ListenConfig{})
	fx := newFixture(t, 6*4096+100, 4096)
	marker := []byte("THE-PLAINTEXT-MARKER-OF-THIS-TEST")
	copy(fx.data[5000:], marker)
	if err := os.WriteFile(fx.src.Name(), fx.data, 0o600); err != nil {
		t.Fatal(err)
	}
	fx.rechecksum()
	tok := expect(t, l, fx.sink)
	proxy := newRecordingProxy(t, l.Addr().String())
	var mu sync.Mutex
	var encs []Encryption
	opt := SendOptions{Streams: 2, Encrypt: true, CertSHA256: l.CertSHA256(), Connected: func(e Encryption) {
		mu.Lock()
		encs = append(encs, e)
		mu.Unlock()
	}}
	if res := drive(t.Context(), proxy.ln.Addr().String(), tok, fx, 0, opt); res.err != nil {
		t.Fatalf("encrypted transfer: %v", res.err)
	}
	fx.checkDest(t)
	want := EncryptionTLS
	if ok, _ := KTLS(); ok {
		want = EncryptionKTLS
	}
	if len(encs) != 2 || encs[0] != want || encs[1] != want {
		t.Fatalf("connections reported %v, want two %v", encs, want)
	}
	id := tok.id()
	for i, w := range proxy.captured() {
		if bytes.Contains(w, marker) || bytes.Contains(w, id[:]) || bytes.Contains(w, tok.secret()) {
			t.Fatalf("connection %d: the marker or the token is visible on the wire", i)
		}
	}
}

// A sender trusts only the pinned certificate; a transfer that requires
// encryption refuses plaintext; a listener without TLS refuses a handshake.
func TestEncryptionRefusals(t *testing.T) {
	l := newListener(t, ListenConfig{})
	fx := newFixture(t, 4096, 4096)
	tok, _ := NewToken()
	release := l.ExpectWith(tok, fx.sink, ExpectOptions{RequireTLS: true})
	t.Cleanup(release)
	res := drive(t.Context(), l.Addr().String(), tok, fx, 0, SendOptions{Streams: 1})
	if !errors.Is(res.err, ErrEncryptionRequired) {
		t.Fatalf("plaintext to a transfer that requires TLS: %v, want ErrEncryptionRequired", res.err)
	}
	wrong := l.CertSHA256()
	wrong[0] ^= 1
	res = drive(t.Context(), l.Addr().String(), tok, fx, 0, SendOptions{Streams: 1, Encrypt: true, CertSHA256: wrong})
	if !errors.Is(res.err, ErrStreamBroken) || !strings.Contains(res.err.Error(), errCertMismatch.Error()) {
		t.Fatalf("wrong pin: %v, want a broken stream naming the certificate mismatch", res.err)
	}
	plain := newListener(t, ListenConfig{NoTLS: true})
	if plain.CertSHA256() != ([32]byte{}) {
		t.Fatal("a listener without TLS has a certificate fingerprint")
	}
	tok2 := expect(t, plain, fx.sink)
	res = drive(t.Context(), plain.Addr().String(), tok2, fx, 0, SendOptions{Streams: 1, Encrypt: true, CertSHA256: l.CertSHA256()})
	if !errors.Is(res.err, ErrStreamBroken) {
		t.Fatalf("TLS to a listener without TLS: %v, want ErrStreamBroken", res.err)
	}
	if err := Send(t.Context(), l.Addr().String(), tok, nil, nil, nil, SendOptions{Encrypt: true}); err == nil {
		t.Fatal("Send with encryption and no fingerprint succeeded")
	}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// HKDF-Expand-Label against RFC 8448 (section 3, "Simple 1-RTT Handshake"):
// the server's handshake and application write keys.
func TestTrafficKeyRFC8448(t *testing.T) {
	for _, v := range []struct{ name, secret, key, iv string }{
		{"server handshake", "b6 7b 7d 69 0c c1 6c 4e 75 e5 42 13 cb 2d 37 b4 e9 c9 12 bc de d9 10 5d 42 be fd 59 d3 91 ad 38",
			"3f ce 51 60 09 c2 17 27 d0 f2 e4 e8 6e e4 03 bc", "5d 31 3e b2 67 12 76 ee 13 00 0b 30"},
		{"server application", "a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32 82 04 b4 f4 4b fb 6b 3a 4b 4f 1f 3f cb 63 16 43",
			"9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56", "cf 78 2b 88 dd 83 54 9a ad f1 e9 84"},
	} {
		key, iv, err := trafficKey(tls.TLS_AES_128_GCM_SHA256, unhex(t, v.secret))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(key, unhex(t, v.key)) || !bytes.Equal(iv, unhex(t, v.iv)) {
			t.Errorf("%s: key %x iv %x, want %s / %s", v.name, key, iv, v.key, v.iv)
		}
	}
	info, err := cryptoInfo(tls.TLS_AES_128_GCM_SHA256, unhex(t, "a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32 82 04 b4 f4 4b fb 6b 3a 4b 4f 1f 3f cb 63 16 43"), 5)
	if err != nil {
		t.Fatal(err)
	}
	// struct tls12_crypto_info_aes_gcm_128: version, cipher, iv[8], key[16], salt[4], rec_seq[8].
	want := binary.NativeEndian.AppendUint16(nil, tls13Version)
	want = binary.NativeEndian.AppendUint16(want, cipherAESGCM128)
	want = append(want, unhex(t, "dd 83 54 9a ad f1 e9 84 9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56 cf 78 2b 88 00 00 00 00 00 00 00 05")...)
	if !bytes.Equal(info, want) {
		t.Fatalf("crypto_info %x, want %x", info, want)
	}
	for _, suite := range []uint16{tls.TLS_AES_256_GCM_SHA384, tls.TLS_CHACHA20_POLY1305_SHA256} {
		if info, err := cryptoInfo(suite, make([]byte, 48), 0); err != nil || len(info) != 56 {
			t.Errorf("%s: crypto_info of %d bytes, %v; want 56", tls.CipherSuiteName(suite), len(info), err)
		}
	}
}

// The keys handed to the kernel are the ones crypto/tls uses: after the data
// channel's exchange through crypto/tls (one record each way), the next record
// the client sends decrypts with the key, IV and sequence number that
// cryptoInfo encodes from the key log. This is what kTLS depends on, checked
// on a host without kTLS.
func TestKTLSKeysMatchCryptoTLS(t *testing.T) {
	cert, pin, err := ephemeralCert()
	if err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	rec := &recordingConn{Conn: a}
	client := newTLSSession(rec, clientTLSConfig(pin), false, true)
	server := newTLSSession(b, serverTLSConfig(cert), true, true)
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, preambleLen)
		_, err := io.ReadFull(server.conn, buf)
		if err == nil {
			_, err = server.conn.Write(appendReply(nil, replyOK))
		}
		if err == nil {
			_, err = io.ReadFull(server.conn, make([]byte, 5))
		}
		done <- err
	}()
	tok, _ := NewToken()
	if _, err := client.conn.Write(appendPreamble(nil, tok, [nonceLen]byte{})); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(client.conn, make([]byte, replyLen)); err != nil {
		t.Fatal(err)
	}
	before := len(rec.written())
	if _, err := client.conn.Write([]byte("frame")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	record := rec.written()[before:]
	suite := client.conn.ConnectionState().CipherSuite
	if suite != tls.TLS_AES_128_GCM_SHA256 && suite != tls.TLS_AES_256_GCM_SHA384 {
		t.Skipf("negotiated %s; this check decrypts AES-GCM only", tls.CipherSuiteName(suite))
	}
	csecret, _, err := client.log.secrets()
	if err != nil {
		t.Fatal(err)
	}
	info, err := cryptoInfo(suite, csecret, recordsBeforeKTLS)
	if err != nil {
		t.Fatal(err)
	}
	keyLen := 16
	if suite == tls.TLS_AES_256_GCM_SHA384 {
		keyLen = 32
	}
	ivTail, key := info[4:12], info[12:12+keyLen]
	salt, seq := info[12+keyLen:16+keyLen], info[16+keyLen:]
	nonce := append(bytes.Clone(salt), ivTail...)
	for i := range seq {
		nonce[4+i] ^= seq[i]
	}
	blk, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(blk)
	if len(record) < 5 || record[0] != 23 {
		t.Fatalf("next client record %x is not application data", record)
	}
	plain, err := aead.Open(nil, nonce, record[5:], record[:5])
	if err != nil {
		t.Fatalf("the record after the exchange does not decrypt with the kTLS crypto_info: %v", err)
	}
	if want := append([]byte("frame"), 23); !bytes.Equal(plain, want) {
		t.Fatalf("decrypted %q, want %q", plain, want)
	}
}

// recordingConn records what is written through it.
type recordingConn struct {
	net.Conn
	mu  sync.Mutex
	out []byte
}

func (c *recordingConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.out = append(c.out, b...)
	c.mu.Unlock()
	return c.Conn.Write(b)
}

func (c *recordingConn) written() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.out)
}

// rechecksum recomputes the fixture's chunk CRCs after a test changed its data.
func (fx *fixture) rechecksum() {
	for i, c := range fx.chunks {
		fx.chunks[i].CRC = crc32c.Checksum(fx.data[c.Offset : c.Offset+int64(c.Length)])
	}
}
