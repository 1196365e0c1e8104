"use strict";
// Plays a live WebSocket of fragmented MP4 (GridEdge's video hub) in `video` through Media
// Source Extensions; messages and errors go to `note`. Text messages are JSON: a track
// ({codec, mime, width, height, generation}) before its init segment, or {error}. Binary
// messages are the init segment, then one fragment per frame. Reconnects by itself unless the
// server said why it ended. Returns a function that stops it.
function gridedgePlay(video, note, url) {
  const say = (s) => { note.textContent = s; };
  let ws, stopped = false, ended = false;
  // A player without H.265 says so: an H.265 camera then comes transcoded to H.264.
  const h265 = "MediaSource" in window && MediaSource.isTypeSupported('video/mp4; codecs="hvc1.1.6.L93.B0"');
  const start = () => {
    ws = new WebSocket(url + (url.includes("?") ? "&" : "?") + "h265=" + h265);
    ws.binaryType = "arraybuffer";
    let source = null, buffer = null, mime = null;
    const queue = [];
    const pump = () => {
      if (!buffer || buffer.updating || queue.length === 0) return;
      try { buffer.appendBuffer(queue.shift()); } catch (e) { say("播放错误 playback error: " + e.message); ws.close(); }
    };
    const followLive = () => {
      const b = video.buffered;
      if (!b.length) return;
      const first = b.start(0), end = b.end(b.length - 1);
      // A hole in the timeline (frames the server skipped to a keyframe when it fell behind):
      // play on from the next buffered range instead of waiting at the hole for ever.
      for (let i = 0; i + 1 < b.length; i++) {
        if (video.currentTime >= b.end(i) - 0.1 && video.currentTime < b.start(i + 1)) { video.currentTime = b.start(i + 1); break; }
      }
      // Start on the first buffered picture; stay near the live edge.
      if (video.currentTime < first || end - video.currentTime > 1.5) video.currentTime = Math.max(first, end - 0.2);
      if (!buffer.updating && end - first > 30) buffer.remove(first, end - 20);
      if (video.paused) video.play().catch(() => {});
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") {
        const msg = JSON.parse(ev.data);
        if (msg.error) { ended = true; say(msg.error); return; }
        if (!("MediaSource" in window) || !MediaSource.isTypeSupported(msg.mime)) {
          const hevc = msg.codec.startsWith("hvc1") || msg.codec.startsWith("hev1");
          say(`此浏览器不能播放 ${msg.codec} · this browser cannot play ${msg.codec}` + (hevc ? " (H.265)" : ""));
          ended = true;
          ws.close();
          return;
        }
        say("");
        video.dataset.width = msg.width; video.dataset.height = msg.height;
        if (!source) {
          mime = msg.mime;
          source = new MediaSource();
          video.src = URL.createObjectURL(source);
          source.addEventListener("sourceopen", () => {
            buffer = source.addSourceBuffer(mime);
            buffer.mode = "segments";
            buffer.addEventListener("updateend", () => { followLive(); pump(); });
            pump();
          }, { once: true });
        } else if (buffer && msg.mime !== mime && buffer.changeType) {
          buffer.changeType(msg.mime); mime = msg.mime;
        }
        return;
      }
      queue.push(ev.data);
      if (queue.length > 200) queue.splice(0, queue.length - 200);
      pump();
    };
    ws.onclose = () => {
      if (stopped || ended) return;
      if (!note.textContent) say("连接已断开，重连中 · disconnected, reconnecting");
      setTimeout(() => {
        if (stopped) return;
        video.removeAttribute("src");
        video.load();
        start();
      }, 2000);
    };
  };
  video.addEventListener("error", () => {
    const e = video.error;
    say("视频错误 video error: " + (e ? `${e.code} ${e.message}` : "unknown"));
  });
  start();
  return () => { stopped = true; ws.close(); };
}
