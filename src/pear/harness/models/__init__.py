"""What a run trains: timm backbones with local pretrained weights (`backbones`, reading the
weights files: `weights`), the checkpoint folders the hubs hand out (`hub`), Pear's own ViT
(`pear_vit`), and the training methods, each registered in `method_names` with the torch
helpers it calls in `methods`."""
