"""A threaded pipeline: one thread segments, another draws."""

import queue
import threading

import cv2
import numpy as np


class SegWorker(threading.Thread):
    def __init__(self, predictor, inbox, outbox):
        super().__init__(daemon=True)
        self.predictor = predictor
        self.inbox = inbox
        self.outbox = outbox

    def run(self):
        while True:
            frame, point = self.inbox.get()
            self.predictor.set_image(frame)
            masks, scores, _ = self.predictor.predict(point_coords=point, point_labels=np.array([1]),
                                                      multimask_output=False)
            self.outbox.put((frame, masks[0], float(scores[0])))


def draw_loop(outbox, writer):
    while True:
        frame, mask, score = outbox.get()
        frame[mask] = (0, 255, 0)  # expect: ndarray[mask] = v
        cv2.putText(frame, f"{score:.2f}", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
        writer.write(frame)


def main(predictor, frames):
    inbox, outbox = queue.Queue(maxsize=4), queue.Queue(maxsize=4)
    SegWorker(predictor, inbox, outbox).start()
    writer = cv2.VideoWriter("out.mp4", cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    threading.Thread(target=draw_loop, args=(outbox, writer), daemon=True).start()
    for frame in frames:
        inbox.put((frame, np.array([[320, 240]])))
