"""Train a digit classifier with scikit-learn, reporting to MLflow and a tqdm progress bar.

Runs anywhere, unchanged: under trainflow (`trainflow submit examples/sklearn_digits --follow`)
its metrics land in the job's MLflow run; run by hand it logs to your local MLflow.
The data set ships with scikit-learn, so nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import pickle

import mlflow
import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split
from tqdm import tqdm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    digits = load_digits()
    x = digits.data / 16.0
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=args.seed
    )
    classes = np.unique(digits.target)
    model = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=args.lr, random_state=args.seed)
    rng = np.random.default_rng(args.seed)

    with mlflow.start_run():
        mlflow.log_params({"model": "SGDClassifier", "train_size": len(x_train)})
        for epoch in tqdm(range(args.epochs), desc="epochs", unit="epoch"):
            order = rng.permutation(len(x_train))
            for start in range(0, len(order), args.batch_size):
                batch = order[start : start + args.batch_size]
                model.partial_fit(x_train[batch], y_train[batch], classes=classes)
            accuracy = accuracy_score(y_test, model.predict(x_test))
            loss = log_loss(y_test, model.predict_proba(x_test), labels=classes)
            mlflow.log_metrics({"accuracy": accuracy, "loss": loss}, step=epoch)
            tqdm.write(f"epoch {epoch + 1:3d}/{args.epochs}  loss {loss:.4f}  accuracy {accuracy:.4f}")

        output = os.environ.get("TRAINFLOW_OUTPUT_DIR", ".")
        with open(os.path.join(output, "model.pkl"), "wb") as f:
            pickle.dump(model, f)
        print(f"final accuracy {accuracy:.4f}; model saved to {output}/model.pkl")


if __name__ == "__main__":
    main()
