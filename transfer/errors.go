package transfer

import "errors"

// Sentinel errors of the engine. They are wrapped with %w and context; test
// with errors.Is. The service layer maps each to a gRPC status code.
var (
	// ErrNotFound: a source file, destination directory or transfer does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: the destination exists and overwrite was not requested.
	ErrExists = errors.New("already exists")
	// ErrPathEscape: a path resolves outside the export root ("..", an
	// absolute path or a symlink leading out of it).
	ErrPathEscape = errors.New("path escapes the export root")
	// ErrPermission: the operating system refused access.
	ErrPermission = errors.New("permission denied")
	// ErrInvalid: a request is malformed (bad size, chunk size, path form...).
	ErrInvalid = errors.New("invalid request")
	// ErrNoSpace: the destination file system is full.
	ErrNoSpace = errors.New("no space left on the destination")
	// ErrTooMany: the node is at its limit of concurrent transfers.
	ErrTooMany = errors.New("too many concurrent transfers")
	// ErrQuota: a client is at one of its per-client limits.
	ErrQuota = errors.New("client limit reached")
	// ErrCorrupt: data failed verification (chunk CRC32C or whole-file checksum).
	ErrCorrupt = errors.New("data failed verification")
	// ErrPeerUnavailable: the peer node cannot be reached.
	ErrPeerUnavailable = errors.New("peer unavailable")
	// ErrTransportUnavailable: the requested transport cannot be used.
	ErrTransportUnavailable = errors.New("transport unavailable")
	// ErrCanceled: the transfer was cancelled.
	ErrCanceled = errors.New("transfer cancelled")
	// ErrIncomplete: Commit was asked for before every chunk landed.
	ErrIncomplete = errors.New("transfer incomplete")
	// ErrTimeout: the peer stopped making progress.
	ErrTimeout = errors.New("transfer timed out")
)

// Region errors.
var (
	// ErrOutOfRange: an offset and length do not fit the region.
	ErrOutOfRange = errors.New("out of range")
	// ErrBusy: a region is in use by a transfer.
	ErrBusy = errors.New("in use")
	// ErrRegionLimit: registering a region would exceed the node's cap.
	ErrRegionLimit = errors.New("region memory limit reached")
)
