package rdma

import (
	"cmp"
	"sync"
	"time"
)

// idlePool parks idle connections (a source's Sender, a destination's
// ParkedEndpoint) between transfers, keyed by peer: the mechanics under
// Pool. Each entry is closed when it has been idle for expiry, and every
// entry when the pool is closed.
type idlePool[T any] struct {
	expiry  time.Duration
	closeFn func(T)
	expired func(T) // told after closeFn of an expired entry (nil: nobody)
	// gone, when set, is asked every watchEvery about the device of each
	// parked entry; true closes it (its device is being removed).
	gone func(device string) bool
	// broken, when set, is asked every watchEvery about each parked entry
	// (and by take): true closes it (its device reported it unusable).
	broken   func(T) bool
	watching bool
	stop     chan struct{}  // closed by close, so the watcher ends at once
	watcher  sync.WaitGroup // close waits for the watcher to end

	mu     sync.Mutex
	m      map[string][]*idleEntry[T]
	closed bool
}

type idleEntry[T any] struct {
	v      T
	device string
	timer  *time.Timer
}

func newIdlePool[T any](expiry time.Duration, closeFn, expired func(T)) *idlePool[T] {
	return &idlePool[T]{expiry: expiry, closeFn: closeFn, expired: expired, m: make(map[string][]*idleEntry[T]), stop: make(chan struct{})}
}

// put parks v (which uses device) under key; when the pool is closed or
// disabled it closes v.
func (p *idlePool[T]) put(key, device string, v T) {
	p.mu.Lock()
	if p.closed || p.expiry <= 0 {
		p.mu.Unlock()
		p.closeFn(v)
		return
	}
	e := &idleEntry[T]{v: v, device: device}
	p.m[key] = append(p.m[key], e)
	if (p.gone != nil || p.broken != nil) && !p.watching {
		p.watching = true
		p.watcher.Add(1)
		go p.watch()
	}
	e.timer = time.AfterFunc(p.expiry, func() {
		if p.remove(key, e) {
			p.closeFn(e.v)
			if p.expired != nil {
				p.expired(e.v)
			}
		}
	})
	p.mu.Unlock()
}

// watchEvery is how often parked entries are checked with gone and broken
// (knobs.watchEvery overrides it).
const watchEvery = time.Second

// watch closes parked entries for which gone or broken is true, every watchEvery,
// until the pool is empty or closed. An idle parked connection must not keep
// a device open that is being removed (rdma link delete waits for it).
func (p *idlePool[T]) watch() {
	defer p.watcher.Done()
	t := time.NewTicker(cmp.Or(knobs.watchEvery, watchEvery))
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		p.mu.Lock()
		if p.closed || len(p.m) == 0 {
			p.watching = false
			p.mu.Unlock()
			return
		}
		type kv struct {
			k string
			e *idleEntry[T]
		}
		var all []kv
		for k, list := range p.m {
			for _, e := range list {
				all = append(all, kv{k, e})
			}
		}
		p.mu.Unlock()
		removed := map[string]bool{}
		for _, x := range all {
			gone, ok := removed[x.e.device]
			if !ok && p.gone != nil {
				gone = p.gone(x.e.device)
				removed[x.e.device] = gone
			}
			if (gone || p.broken != nil && p.broken(x.e.v)) && p.remove(x.k, x.e) {
				x.e.timer.Stop()
				p.closeFn(x.e.v)
			}
		}
	}
}

// remove takes e out of the pool; false if it was taken already.
func (p *idlePool[T]) remove(key string, e *idleEntry[T]) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.m[key]
	for i, x := range list {
		if x == e {
			list = append(list[:i:i], list[i+1:]...)
			if len(list) == 0 {
				delete(p.m, key)
			} else {
				p.m[key] = list
			}
			return true
		}
	}
	return false
}

// take removes and returns the most recently parked entry under key for
// which match is true (match nil: any).
func (p *idlePool[T]) take(key string, match func(T) bool) (v T, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.m[key]
	for i := len(list) - 1; i >= 0; i-- {
		e := list[i]
		if match != nil && !match(e.v) || p.broken != nil && p.broken(e.v) {
			continue
		}
		e.timer.Stop()
		list = append(list[:i:i], list[i+1:]...)
		if len(list) == 0 {
			delete(p.m, key)
		} else {
			p.m[key] = list
		}
		return e.v, true
	}
	return v, false
}

// drop closes every entry under key (all keys when key is "" and all is set).
func (p *idlePool[T]) drop(key string, all bool) int {
	p.mu.Lock()
	var out []*idleEntry[T]
	for k, list := range p.m {
		if all || k == key {
			out = append(out, list...)
			delete(p.m, k)
		}
	}
	p.mu.Unlock()
	for _, e := range out {
		e.timer.Stop()
		p.closeFn(e.v)
	}
	return len(out)
}

// close stops the watcher, waiting for it, and closes every entry; later
// puts close theirs at once.
func (p *idlePool[T]) close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.stop)
	}
	p.mu.Unlock()
	p.watcher.Wait()
	p.drop("", true)
}

// len returns the number of parked entries.
func (p *idlePool[T]) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, list := range p.m {
		n += len(list)
	}
	return n
}
