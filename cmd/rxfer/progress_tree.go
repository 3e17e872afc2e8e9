package main

import (
	"fmt"
	"io"
	"strings"
	"sync/atomic"

	"github.com/vbauerster/mpb/v8/decor"

	pb "github.com/rxfer/rxfer/api/rxferv1"
)

// treeReport is what the line and bar reporters add for a directory tree
// (an event with tree set): files done out of the total, the source's
// warnings once each, and a summary that counts files.
type treeReport struct {
	warned int // warnings printed
	// The bar's files counter, read by its decorator's goroutine.
	tree                  atomic.Bool
	filesDone, filesTotal atomic.Int64
}

// warn prints the warnings of e not printed yet (skipped special files).
func (t *treeReport) warn(w io.Writer, e *pb.TransferInfo) {
	for ; t.warned < len(e.Warnings); t.warned++ {
		fmt.Fprintf(w, "warning: %s\n", e.Warnings[t.warned])
	}
}

// files is "N/M files, " for a tree's progress line.
func (t *treeReport) files(e *pb.TransferInfo) string {
	if !e.Tree {
		return ""
	}
	return fmt.Sprintf("%d/%d files, ", e.FilesDone, e.FilesTotal)
}

// barFiles is the bar's "N/M files " decorator ("" for a file).
func (t *treeReport) barFiles(decor.Statistics) string {
	if !t.tree.Load() {
		return ""
	}
	return fmt.Sprintf("%d/%d files ", t.filesDone.Load(), t.filesTotal.Load())
}

// summary is the line after a committed copy; a tree's starts
// "copied N files, SIZE in ...".
func (t *treeReport) summary(e *pb.TransferInfo) string {
	s := summary(e)
	if !e.Tree {
		return s
	}
	noun := "files"
	if e.FilesTotal == 1 {
		noun = "file"
	}
	return strings.Replace(s, "copied ", fmt.Sprintf("copied %d %s, ", e.FilesTotal, noun), 1)
}
