"""Train an MNIST MLP whose hidden layer is a hashed PyTorch layer (LSHLinear).

python examples/train_mnist_torch.py [DATA_DIR]    # or set $LSHCORE_DATA
"""

import sys

import torch
from torch import nn
from torch.nn import functional as F

from lshcore.adapters._common import load_example_data
from lshcore.adapters.torch import LSHLinear

x_train, y_train, x_test, y_test = (torch.as_tensor(a) for a in load_example_data(*sys.argv[1:2]))
torch.manual_seed(0)
model = nn.Sequential(
    LSHLinear(x_train.shape[1], 1000, active=0.05, k=6, l=50, seed=0),  # 5% of the units per input
    nn.ReLU(),
    nn.Linear(1000, 10),
)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
for epoch in range(2):
    model.train()
    for idx in torch.randperm(len(x_train)).split(128):
        loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()  # the layer's index follows the new weights by itself
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    print(f"epoch {epoch + 1}: loss {loss.item():.3f}, test accuracy {accuracy:.2%}")
