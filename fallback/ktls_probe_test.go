package fallback

import "testing"

// KTLS answers without error on any host and says why when it is off; on a
// host without kTLS, an encrypted connection falls back to crypto/tls (see
// TestEncryptedRoundTrip, which expects what KTLS reports).
func TestKTLSProbe(t *testing.T) {
	ok, why := KTLS()
	t.Logf("kTLS available: %v %s", ok, why)
	if !ok && why == "" {
		t.Fatal("kTLS off without a reason")
	}
}
