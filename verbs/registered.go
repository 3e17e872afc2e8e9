package verbs

import "sync/atomic"

// registered counts the bytes of memory regions registered now, by what
// they are for (RegisteredBytes), for the daemon's metrics.
var registered [3]atomic.Int64

const (
	regRemoteWritable = iota // peers write into it: a destination's slots or window
	regReadOnly              // local read only: a source's buffers
	regLocal                 // local read/write: send and receive buffers of control messages
)

func registeredKind(access AccessFlags) int {
	switch {
	case access&AccessRemoteWrite != 0:
		return regRemoteWritable
	case access == 0:
		return regReadOnly
	}
	return regLocal
}

// RegisteredBytes returns the bytes registered with the devices now:
// remote-writable regions (a destination's staging slots and windows),
// read-only ones (a source's buffers) and local ones (control messages).
func RegisteredBytes() (remoteWritable, readOnly, local int64) {
	return registered[regRemoteWritable].Load(), registered[regReadOnly].Load(), registered[regLocal].Load()
}
