package verbs

import (
	"errors"
	"fmt"
)

// Sentinel errors, for errors.Is.
var (
	// ErrNoDevice means there is no RDMA device (or none with the requested
	// name). On a kernel without RDMA support ibv_get_device_list fails
	// with ENOSYS; that is reported as ErrNoDevice too.
	ErrNoDevice = errors.New("no RDMA device")

	// ErrNotSupported means the package was built without cgo or for a
	// platform other than Linux, so no verbs call can work.
	ErrNotSupported = errors.New("RDMA verbs not supported in this build (needs linux and cgo)")

	// ErrClosed means the object was already closed.
	ErrClosed = errors.New("verbs object already closed")

	// ErrTimeout means a wait for completions ended at its deadline.
	ErrTimeout = errors.New("timed out waiting for completions")
)

// Error records a failed verbs call, the device it was made on and why.
type Error struct {
	Op     string // the verbs call, e.g. "ibv_reg_mr"
	Device string // device name, when known
	Err    error  // the cause: a sentinel above, a syscall.Errno, ...
}

// Error returns e.g. "verbs: rxe0: ibv_reg_mr: cannot allocate memory".
func (e *Error) Error() string {
	if e.Device != "" {
		return "verbs: " + e.Device + ": " + e.Op + ": " + e.Err.Error()
	}
	return "verbs: " + e.Op + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// WCStatus is the status of a work completion (enum ibv_wc_status). A
// non-success status is also an error, so errors.Is(err, WCRemAccessErr)
// works on a [CompletionError].
type WCStatus int

// Work completion statuses.
const (
	WCSuccess          WCStatus = 0
	WCLocLenErr        WCStatus = 1
	WCLocQPOpErr       WCStatus = 2
	WCLocEECOpErr      WCStatus = 3
	WCLocProtErr       WCStatus = 4
	WCWRFlushErr       WCStatus = 5
	WCMWBindErr        WCStatus = 6
	WCBadRespErr       WCStatus = 7
	WCLocAccessErr     WCStatus = 8
	WCRemInvReqErr     WCStatus = 9
	WCRemAccessErr     WCStatus = 10
	WCRemOpErr         WCStatus = 11
	WCRetryExcErr      WCStatus = 12
	WCRNRRetryExcErr   WCStatus = 13
	WCLocRDDViolErr    WCStatus = 14
	WCRemInvRdReqErr   WCStatus = 15
	WCRemAbortErr      WCStatus = 16
	WCInvEECNErr       WCStatus = 17
	WCInvEECStateErr   WCStatus = 18
	WCFatalErr         WCStatus = 19
	WCRespTimeoutErr   WCStatus = 20
	WCGeneralErr       WCStatus = 21
	WCTMErr            WCStatus = 22
	WCTMRndvIncomplete WCStatus = 23
)

var wcStatusNames = [...]struct{ name, text string }{
	{"SUCCESS", "success"},
	{"LOC_LEN_ERR", "local length error"},
	{"LOC_QP_OP_ERR", "local QP operation error"},
	{"LOC_EEC_OP_ERR", "local EE context operation error"},
	{"LOC_PROT_ERR", "local protection error"},
	{"WR_FLUSH_ERR", "work request flushed"},
	{"MW_BIND_ERR", "memory window bind error"},
	{"BAD_RESP_ERR", "bad response error"},
	{"LOC_ACCESS_ERR", "local access error"},
	{"REM_INV_REQ_ERR", "remote invalid request error"},
	{"REM_ACCESS_ERR", "remote access error"},
	{"REM_OP_ERR", "remote operation error"},
	{"RETRY_EXC_ERR", "transport retry counter exceeded"},
	{"RNR_RETRY_EXC_ERR", "RNR retry counter exceeded"},
	{"LOC_RDD_VIOL_ERR", "local RDD violation error"},
	{"REM_INV_RD_REQ_ERR", "remote invalid RD request"},
	{"REM_ABORT_ERR", "operation aborted"},
	{"INV_EECN_ERR", "invalid EE context number"},
	{"INV_EEC_STATE_ERR", "invalid EE context state"},
	{"FATAL_ERR", "fatal error"},
	{"RESP_TIMEOUT_ERR", "response timeout error"},
	{"GENERAL_ERR", "general error"},
	{"TM_ERR", "tag matching error"},
	{"TM_RNDV_INCOMPLETE", "tag matching rendezvous incomplete"},
}

// String returns the enum name without its IBV_WC_ prefix, e.g. "REM_ACCESS_ERR".
func (s WCStatus) String() string {
	if s >= 0 && int(s) < len(wcStatusNames) {
		return wcStatusNames[s].name
	}
	return fmt.Sprintf("WCStatus(%d)", int(s))
}

// Error returns the name and its meaning, e.g. "REM_ACCESS_ERR (remote access error)".
func (s WCStatus) Error() string {
	if s >= 0 && int(s) < len(wcStatusNames) {
		return wcStatusNames[s].name + " (" + wcStatusNames[s].text + ")"
	}
	return s.String()
}

// CompletionError is a work request that completed with an error status.
// After such a completion the QP is in the error state: outstanding work
// requests complete with WR_FLUSH_ERR, and the QP must be reset (and
// connected again) or destroyed.
type CompletionError struct {
	WRID      uint64   // the failed work request
	QPN       uint32   // on this local QP
	Status    WCStatus // why
	VendorErr uint32
}

// Error returns e.g. "verbs: work request 3 on QP 0x11: REM_ACCESS_ERR (remote access error)".
func (e *CompletionError) Error() string {
	s := fmt.Sprintf("verbs: work request %#x on QP %#x: %v", e.WRID, e.QPN, e.Status.Error())
	if e.VendorErr != 0 {
		s += fmt.Sprintf(", vendor error %#x", e.VendorErr)
	}
	return s
}

// Unwrap returns the status, so errors.Is(err, WCRemAccessErr) works.
func (e *CompletionError) Unwrap() error { return e.Status }
