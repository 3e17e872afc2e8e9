//go:build !linux || !cgo

package verbs

import "unsafe"

// Without cgo (or off Linux) there is no libibverbs: every call that would
// reach it fails with ErrNotSupported. The pure-Go types still build, so
// callers can compile and choose another transport.

const (
	batchSize       = 32
	wcScratchSize   = 1
	sendScratchSize = 1
	recvScratchSize = 1
)

func notSupported(op string) error { return &Error{Op: op, Err: ErrNotSupported} }

func cDevices() ([]DeviceInfo, error) { return nil, notSupported("ibv_get_device_list") }

func cOpen(name string) (unsafe.Pointer, string, error) {
	return nil, "", &Error{Op: "ibv_open_device", Device: name, Err: ErrNotSupported}
}

func cCloseDevice(unsafe.Pointer) error                  { return ErrNotSupported }
func cQueryDevice(unsafe.Pointer) (DeviceAttr, error)    { return DeviceAttr{}, ErrNotSupported }
func cQueryPort(unsafe.Pointer, uint8) (PortAttr, error) { return PortAttr{}, ErrNotSupported }
func cGIDTable(unsafe.Pointer, uint8, int) ([]GIDEntry, error) {
	return nil, ErrNotSupported
}
func cAllocPD(unsafe.Pointer) (unsafe.Pointer, error) { return nil, ErrNotSupported }
func cDeallocPD(unsafe.Pointer) error                 { return ErrNotSupported }
func cRegMR(unsafe.Pointer, []byte, AccessFlags) (unsafe.Pointer, uint32, uint32, error) {
	return nil, 0, 0, ErrNotSupported
}
func cDeregMR(unsafe.Pointer) error { return ErrNotSupported }
func cCreateCompChannel(unsafe.Pointer) (unsafe.Pointer, int, error) {
	return nil, -1, ErrNotSupported
}
func cDestroyCompChannel(unsafe.Pointer) error { return ErrNotSupported }
func cCreateCQ(unsafe.Pointer, int, unsafe.Pointer) (unsafe.Pointer, int, error) {
	return nil, 0, ErrNotSupported
}
func cDestroyCQ(unsafe.Pointer) error                              { return ErrNotSupported }
func cReqNotifyCQ(unsafe.Pointer) error                            { return ErrNotSupported }
func cGetCQEvent(unsafe.Pointer) (unsafe.Pointer, error)           { return nil, ErrNotSupported }
func cAckCQEvents(unsafe.Pointer, int)                             {}
func cAllocScratch(int, int) unsafe.Pointer                        { return nil }
func cFree(unsafe.Pointer)                                         {}
func cPollCQ(_, _ unsafe.Pointer, _ []WorkCompletion) (int, error) { return 0, ErrNotSupported }
func cCreateQP(_, _, _ unsafe.Pointer, _ QPConfig) (unsafe.Pointer, uint32, int, error) {
	return nil, 0, 0, ErrNotSupported
}
func cDestroyQP(unsafe.Pointer) error                        { return ErrNotSupported }
func cQPInit(unsafe.Pointer, uint8, AccessFlags) error       { return ErrNotSupported }
func cQPRTR(unsafe.Pointer, ConnectConfig, PeerInfo) error   { return ErrNotSupported }
func cQPRTS(unsafe.Pointer, ConnectConfig) error             { return ErrNotSupported }
func cQPSetState(unsafe.Pointer, QPState) error              { return ErrNotSupported }
func cQPState(unsafe.Pointer) (QPState, error)               { return 0, ErrNotSupported }
func cPostSend(_, _ unsafe.Pointer, _ []SendWR) (int, error) { return 0, ErrNotSupported }
func cPostRecv(_, _ unsafe.Pointer, _ []RecvWR) (int, error) { return 0, ErrNotSupported }

func cAsyncFD(unsafe.Pointer) (int, error)              { return -1, ErrNotSupported }
func cGetAsyncEvent(unsafe.Pointer) (AsyncEvent, error) { return AsyncEvent{}, ErrNotSupported }
