package transfer

// testKnobs are this package's test hooks and settings, in one place:
// production code never sets knobs. Tests set them for both nodes of a pair
// (newPair) and reset them when the test ends.
type testKnobs struct {
	// corruptChunk makes the source flip a bit of the CRC it sends with chunk
	// index on the given attempt (1-based), as if the bytes were corrupted on
	// the wire, so the destination's verification is exercised.
	corruptChunk func(index uint32, attempt int) bool
	// breakRDMA is asked after each chunk verified over RDMA, with the number
	// verified so far; true breaks the first lane's queue pair (it goes to
	// the error state, as on a link failure); the other lanes must notice
	// that the RDMA attempt is over.
	breakRDMA func(verified int) bool
	// rdmaConnected is told, on the source, which queue pairs carry a
	// transfer (ours, the destination's) and whether the connection was
	// reused from an earlier transfer.
	rdmaConnected func(localQPN, remoteQPN uint32, reused bool)
	// idleRDMAClosed is told when a parked queue pair expired and was closed
	// (outgoing: a source's sender; else a destination's endpoint).
	idleRDMAClosed func(outgoing bool, qpn uint32)
	// stagingOnly keeps RDMA transfers into memfd-backed region windows off
	// the in-place path (landsInPlace), to measure staging slots.
	stagingOnly bool
	// namedPartial makes destinations use a named partial file, as on a
	// file system without O_TMPFILE.
	namedPartial bool
}

var knobs testKnobs
