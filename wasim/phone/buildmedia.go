package phone

import (
	"go.mau.fi/whatsmeow/proto/waE2E"
	"google.golang.org/protobuf/proto"
)

// Audio builds an audio message for blob after it was uploaded to up; ptt
// marks a voice note (push to talk).
func Audio(blob MediaBlob, up Uploaded, mime string, ptt bool) *waE2E.Message {
	return &waE2E.Message{AudioMessage: &waE2E.AudioMessage{
		URL:           proto.String(up.URL),
		DirectPath:    proto.String(up.DirectPath),
		Mimetype:      proto.String(mime),
		PTT:           proto.Bool(ptt),
		MediaKey:      blob.MediaKey,
		FileSHA256:    blob.FileSHA256,
		FileEncSHA256: blob.FileEncSHA256,
		FileLength:    proto.Uint64(blob.FileLength),
	}}
}

// Video builds a video message for blob after it was uploaded to up.
func Video(blob MediaBlob, up Uploaded, mime, caption string) *waE2E.Message {
	return &waE2E.Message{VideoMessage: &waE2E.VideoMessage{
		URL:           proto.String(up.URL),
		DirectPath:    proto.String(up.DirectPath),
		Mimetype:      proto.String(mime),
		Caption:       optString(caption),
		MediaKey:      blob.MediaKey,
		FileSHA256:    blob.FileSHA256,
		FileEncSHA256: blob.FileEncSHA256,
		FileLength:    proto.Uint64(blob.FileLength),
	}}
}

// Sticker builds a sticker message for blob after it was uploaded to up.
func Sticker(blob MediaBlob, up Uploaded, mime string) *waE2E.Message {
	return &waE2E.Message{StickerMessage: &waE2E.StickerMessage{
		URL:           proto.String(up.URL),
		DirectPath:    proto.String(up.DirectPath),
		Mimetype:      proto.String(mime),
		MediaKey:      blob.MediaKey,
		FileSHA256:    blob.FileSHA256,
		FileEncSHA256: blob.FileEncSHA256,
		FileLength:    proto.Uint64(blob.FileLength),
	}}
}
